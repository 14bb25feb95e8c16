"""Roll out a Kubernetes deployment whenever a release tag is pushed.

Run it (``kubectl`` must be on PATH and pointed at your cluster)::

    cd examples
    RECEIVER_HANDLERS=deploy_on_push \
    RECEIVER_AUTH_HEADERS='{"Authentication": "s3cret"}' \
    DEPLOY_NAMESPACE=prod gunicorn --chdir .. --pythonpath . wsgi:app

A push of ``prod/team/api:v1.4.0`` runs
``kubectl set image deployment/api api=<host>/prod/team/api@sha256:...``: the last path
segment of the repository names both the deployment and its container, and the image is
pinned by digest so that a tag moved later cannot change what runs.

The receiver answers the registry at once and runs this handler as a job in a worker
thread, so a slow ``kubectl`` never makes the registry send the push again; a failure is
retried with backoff (``RECEIVER_HANDLER_ATTEMPTS``) and then shows in
``receiver jobs --status dead``. Setting the same image twice is harmless, which suits a
job that runs at least once.
"""

from __future__ import annotations

import logging
import os
import subprocess

from receiver import PushImage, on

log = logging.getLogger("receiver.examples.deploy")

NAMESPACE = os.environ.get("DEPLOY_NAMESPACE", "prod")
TAGS = os.environ.get("DEPLOY_TAGS", "v*")


@on("pushImage", namespace=NAMESPACE, tag=TAGS)
def rollout(event: PushImage) -> None:
    app = event.repository.name.rsplit("/", 1)[-1]
    for resource in event.resources:
        image = resource.digest_reference or resource.url
        command = ["kubectl", "set", "image", f"deployment/{app}", f"{app}={image}"]
        log.info("rolling out %s:%s: %s", event.repository.full_name, resource.tag, " ".join(command))
        # check=True: a failed rollout raises, and the job is retried with backoff.
        subprocess.run(command, check=True, timeout=60)

"""The baseline for bench_receiver.py: a bare Flask endpoint that only parses the JSON."""

from flask import Flask, request

app = Flask(__name__)


@app.post("/webhook")
def webhook():
    request.get_json()
    return {"ok": True}

"""The fake Bot API server and the sandbox on 127.0.0.1, for trying the bot by hand or in a
container (scripts/docker-smoke). Prints one line: API base, file base, sandbox URL; then
the Bot API methods called so far, once a second, until killed."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from batchjob.sandbox_server import SandboxServer
from batchjob.sandbox_state import SandboxConfig
from tests.e2e.fake_telegram import FakeTelegram


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--token", required=True, help="bearer token the sandbox accepts")
    args = ap.parse_args()
    sandbox = SandboxServer(SandboxConfig(token=args.token)).start()
    tg = FakeTelegram().start()
    print(tg.api_base, tg.file_base, sandbox.url, flush=True)
    seen: set[str] = set()
    while True:
        time.sleep(1)
        with tg.lock:
            called = {name for name, _ in tg.calls}
        if called - seen:
            seen |= called
            print("called", " ".join(sorted(seen)), flush=True)


if __name__ == "__main__":
    main()

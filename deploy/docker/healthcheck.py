"""Docker HEALTHCHECK for the streamer image: is the daemon in this container serving?

``/healthz`` answers 200 ``ok``, or 503 with the reason: ``loading model``, ``saturated``,
``draining``, ``shutting down``. A load balancer takes a replica out of rotation for any 503, but
Docker's health is about the process: a busy daemon (``saturated``) is healthy, so only no answer,
a load that never ends (the start period covers the normal one) or a stop count as unhealthy.
Standard library only, as the image has no curl.
"""

import os
import ssl
import sys
import urllib.error
import urllib.request

HEALTHY = {"ok", "saturated"}


def main() -> int:
    port = os.environ.get("STREAMER_SERVER__PORT", "8765")
    scheme = "https" if os.environ.get("STREAMER_SERVER__CERTFILE") else "http"
    url = f"{scheme}://127.0.0.1:{port}/healthz"
    # The daemon's own certificate is for its public name, not 127.0.0.1: this local probe skips the check.
    context = ssl._create_unverified_context() if scheme == "https" else None
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as response:
            state = response.read().decode().strip()
    except urllib.error.HTTPError as error:
        state = error.read().decode().strip()
    except OSError as error:
        print(f"{url}: {error}")
        return 1
    print(state)
    return 0 if state in HEALTHY else 1


if __name__ == "__main__":
    sys.exit(main())

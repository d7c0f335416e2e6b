"""Saying within seconds that the Hugging Face Hub cannot be reached, and what to do instead.

With no local copy of a file, huggingface_hub retries a failed metadata request with back-off: measured
with no network here, ``deblur models download`` waited 26 s for an error it could have given at once.
One TCP connect to the endpoint with a short timeout answers first whether there is any route at all.
"""

from __future__ import annotations

import socket
import urllib.parse
import urllib.request

#: Longest wait for the endpoint to accept a connection before calling it unreachable.
PROBE_TIMEOUT_S = 3.0


def unreachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why ``endpoint`` (a URL) cannot be connected to, or None when it can.

    Also None when a proxy would carry the request (``HTTPS_PROXY`` and friends, unless ``NO_PROXY``
    exempts the host): only the HTTP client itself can tell whether a proxy gets through.
    """
    url = urllib.parse.urlsplit(endpoint)
    host = url.hostname
    if not host:
        return None
    proxies = urllib.request.getproxies()
    if (url.scheme in proxies or "all" in proxies) and not urllib.request.proxy_bypass(host):
        return None
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except socket.gaierror:
        return f"cannot resolve {host}"
    except TimeoutError:
        return f"no answer from {host} within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def not_cached_message(name: str, file: str, url: str, reason: str) -> str:
    """The line for a Hub model that is neither cached nor downloadable: the two ways that still work."""
    return (
        f"model {name!r} is not in the Hugging Face cache and {reason}; set HF_ENDPOINT to a Hub mirror you can "
        f"reach, or copy {file} from {url} to this machine and pass --weights FILE"
    )

"""Whether the Hugging Face Hub can be reached, found out in a second or two instead of a minute of retries."""

from __future__ import annotations

import httpx2
from huggingface_hub import constants
from huggingface_hub.utils import get_session

PROBE_TIMEOUT = 2.0
"""Seconds the probe of the Hub endpoint waits for an answer."""


def hub_unreachable(timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why the Hub (``HF_ENDPOINT``, default https://huggingface.co) cannot be reached, or None when it answers.

    ``HF_HUB_OFFLINE=1`` is the reason without a request; otherwise one request to the endpoint, through
    huggingface_hub's own HTTP client (its proxies), without retries: any HTTP answer means reachable.
    """
    if constants.is_offline_mode():
        return "offline (HF_HUB_OFFLINE=1)"
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except httpx2.TransportError as error:
        return f"the Hub ({constants.ENDPOINT}) is unreachable ({error or type(error).__name__})"
    return None

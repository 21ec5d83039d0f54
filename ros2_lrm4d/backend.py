"""Choose the reconstruction backend from the node parameters (local model or remote server)."""

from __future__ import annotations

import logging

from lrm4d_core.pipeline import Backend, LocalBackend

from .params import NodeParams

__all__ = ["make_backend"]

log = logging.getLogger(__name__)


def make_backend(params: NodeParams, offline: bool = False) -> Backend:
    """The backend `params` ask for. The local model is the checkpoint named, else the embedded
    default; without either (a source checkout before training) random tiny weights, said loudly.

    Remote: a `lrm4d_core.serve.client.RemoteBackend` for `remote_address`, token from
    `remote_token_file` (else the LRM4D_TOKEN environment variable), deadline `remote_timeout_s`,
    TLS when `remote_tls_ca_file` is set, and the local backend as fallback with
    `fallback_to_local`. A server that is down at start-up is fine: the node runs, reports it in
    diagnostics and connects once the server is up (docs/serving.md).

    `offline` (bag replay, the demo): time is the bag's, not the wall clock's, so an open circuit
    breaker is waited out (up to 4 x remote_timeout_s per window) instead of refusing every window
    the replay reaches meanwhile.
    """
    if params.backend == "remote":
        return _remote_backend(params, offline)
    return _local_backend(params)


def _remote_backend(params: NodeParams, offline: bool = False) -> Backend:
    import os
    from pathlib import Path

    from lrm4d_core.serve.client import RemoteBackend
    from lrm4d_core.serve.server import TOKEN_ENV

    if params.remote_token_file:
        token = Path(params.remote_token_file).expanduser().read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"remote_token_file {params.remote_token_file} is empty")
    else:
        token = os.environ.get(TOKEN_ENV) or None
        if token is None:
            log.warning("no remote_token_file and no %s: calling %s without a token", TOKEN_ENV, params.remote_address)
    fallback = _local_backend(params) if params.fallback_to_local else None
    backend = RemoteBackend(
        # one retry: a live node should not stall much beyond 2 x remote_timeout_s on a dead server
        params.remote_address, token, timeout_s=params.remote_timeout_s, retries=1, image_encoding=params.remote_image_encoding,
        tls_ca_file=params.remote_tls_ca_file or None, fallback=fallback,
        wait_while_open_s=4 * params.remote_timeout_s if offline else 0.0,
    )
    log.info("remote backend %s (%s)%s", params.remote_address, backend.model_id,
             ", local fallback" if fallback is not None else "")
    return backend


def _local_backend(params: NodeParams) -> Backend:
    from lrm4d_core.model.api import default_checkpoint, load_model

    device = None if params.device == "auto" else params.device
    checkpoint = params.checkpoint or default_checkpoint()
    prior = params.prior_overrides()  # node parameters that override the checkpoint's no-learning priors
    overrides = {"prior": prior} if prior else {}
    if params.own_view_deg >= 0:  # the renders' own-view splats (lrm4d_core.model.own_view)
        overrides["own_view"] = {"angle_deg": params.own_view_deg}
    if checkpoint is None:
        log.warning("no checkpoint given and no embedded default model found: using UNTRAINED tiny weights")
        return LocalBackend(load_model(preset="tiny", device=device, **overrides), model_id="lrm4d-tiny-untrained")
    model = load_model(checkpoint, device=device, **overrides)
    return LocalBackend(model, model_id=f"lrm4d-{model.config.preset}:{checkpoint}")

"""Choose the reconstruction backend from the node parameters (local model or remote server)."""

from __future__ import annotations

import logging

from lrm4d_core.pipeline import Backend, LocalBackend

from .params import NodeParams

__all__ = ["make_backend"]

log = logging.getLogger(__name__)


def make_backend(params: NodeParams) -> Backend:
    """The backend `params` ask for. The local model is the checkpoint named, else the embedded
    default; without either (a source checkout before training) random tiny weights, said loudly."""
    if params.backend == "remote":
        raise NotImplementedError("the remote backend (lrm4d serve) is not part of this build yet")
    from lrm4d_core.model.api import default_checkpoint, load_model

    device = None if params.device == "auto" else params.device
    checkpoint = params.checkpoint or default_checkpoint()
    if checkpoint is None:
        log.warning("no checkpoint given and no embedded default model found: using UNTRAINED tiny weights")
        return LocalBackend(load_model(preset="tiny", device=device), model_id="lrm4d-tiny-untrained")
    model = load_model(checkpoint, device=device)
    return LocalBackend(model, model_id=f"lrm4d-{model.config.preset}:{checkpoint}")

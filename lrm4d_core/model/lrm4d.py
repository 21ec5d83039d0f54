"""The 4D-LRM network (SPEC §2): posed, timed images -> one set of 4D Gaussians in the model box.

Data flow, shapes for B batch elements of V views at H x W, patch p, width d, N free tokens:

    images [B, V, 3, H, W] in [0, 1], cameras (B*V, model box), times [B, V] (model time)
      -> build_inputs                      [B, V, H, W, 10]   (rgb, plücker, t; model.inputs)
      -> patchify                          [B, V*h*w, 10*p*p]  h = H/p, w = W/p, views concatenated
                                                               in the given (temporal) order;
                                                               patch vector order (py, px, channel)
      -> Linear(10 p^2, d) -> LayerNorm    [B, V*h*w, d]       no positional embedding
      -> append N free tokens (+ 1 environment token)   [B, V*h*w + N (+ 1), d]
      -> Transformer (pre-LN, SDPA)        [B, V*h*w + N (+ 1), d]
      -> pixel head: LayerNorm + Linear(d, p*p*20), unpatchify -> [B, V*H*W, 20]
         free head:  LayerNorm + Linear(d, 20)                  -> [B, N, 20]
         environment head: LayerNorm + Linear(d, 3 K)           -> [B, 3, K] SH coefficients
      -> pixel-aligned Gaussians: SPEC §1 `Gaussians4D.from_raw` with the ray of each pixel
         ("spec"), or residuals on the heuristic reconstruction `model.prior.decode_prior`
         ("prior"); free Gaussians always SPEC §1 without a ray
      -> Gaussians4D.cat                   [B, V*H*W + N, ...]   (+ `Environment` [B, 3, K])

Output order: pixel-aligned Gaussians view-major then row-major pixels (index
v*H*W + y*W + x), then the N free Gaussians. Every pixel's depth is measured along its own ray.

Precision: on CUDA (and `config.bf16_autocast`), the tokenizer and transformer run under bf16
autocast; the heads and activations always run in float32. On CPU everything is float32.

Initialisation ("prior"): the pixel head's weights are N(0, (0.01/sqrt(d))^2) and its biases zero
except the identity quaternions, so the untrained model is the heuristic reconstruction of
`model.prior`; the environment head starts as the constant `config.background`.

Initialisation ("spec"): trunk Linear weights N(0, 0.02), zero biases, LayerNorm (1, 0). The heads start
small (weights N(0, (0.1/sqrt(d))^2), so raw outputs move ~0.1 around their biases) with biases
chosen so the initial Gaussians are sane rather than degenerate:
    xyz     logit((camera_distance - near) / (far - near)): pixel Gaussians start at the depth of
            the scene centre; free Gaussians' xyz bias is 0 and their weights are 5x larger, so
            they start spread over the box around the origin
    t       0            (scale_t large, so every Gaussian is initially seen at all times)
    rgb     0            (grey, 0.5)
    scale   -1.0         (exp(-3.3) = 0.037 model units)
    scale_t 2.3 + ln 0.5 (0.5 in model time, i.e. a quarter of the window)
    q_l,q_r (1, 0, 0, 0) (identity rotation; a zero quaternion would normalize to 0)
    opacity 0            (sigmoid(-2) = 0.12)
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

from lrm4d_core.cameras import Cameras
from lrm4d_core.environment import Environment, num_coefficients
from lrm4d_core.gaussians import CHANNEL_LAYOUT, Gaussians4D

from .config import RAW_CHANNELS, ModelConfig
from .inputs import build_inputs, flatten_cameras
from .prior import decode_prior, depth_prior
from .transformer import Transformer

__all__ = ["LRM4D", "RawOutput", "SceneOutput"]


class RawOutput(NamedTuple):
    """Pre-activation network output.

    Attributes:
        pixel_raw: [B, V*H*W, 20] raw channels of the pixel-aligned Gaussians (CHANNEL_LAYOUT).
        free_raw: [B, N, 20] raw channels of the free Gaussians.
        ray_origins, ray_directions: [B, V*H*W, 3] the ray of each pixel-aligned Gaussian.
        environment: [B, 3, K] environment-map SH coefficients, or None without that head.
        images, cameras, times: the inputs ("prior" decoding needs them).
        prior_depth: [B, V, H, W] prior depth along every pixel ray ("prior"), else None.
        ground_height: [B] height of a known ground plane in the model box (NaN: unknown), or None.
    """

    pixel_raw: Tensor
    free_raw: Tensor
    ray_origins: Tensor
    ray_directions: Tensor
    environment: Tensor | None = None
    images: Tensor | None = None
    cameras: Cameras | None = None
    times: Tensor | None = None
    prior_depth: Tensor | None = None
    ground_height: Tensor | None = None


class SceneOutput(NamedTuple):
    """Everything the model predicts for a window: Gaussians4D [B, V*H*W + N, ...] and the
    environment map (None without that head). `own`: only in training with the inference-time
    steps on (`inference_steps_in_training`), the same Gaussians decoded without those steps, for
    the losses on the input pixels: the steps correct the network's depths (the view alignment
    rescales each view to the others' silhouettes), so supervised only through them its own depth
    drifts and is wrong wherever they do not act (docs/default_model/experiments.md, session 24)."""

    gaussians: Gaussians4D
    environment: Environment | None
    own: Gaussians4D | None = None


def _prior_bias() -> Tensor:
    """Raw bias of a "prior" pixel Gaussian: zero residuals and identity quaternions."""
    values = {"q_left": [1.0, 0.0, 0.0, 0.0], "q_right": [1.0, 0.0, 0.0, 0.0]}
    return torch.tensor([v for name, n in CHANNEL_LAYOUT for v in values.get(name, [0.0] * n)])


def _channel_bias(config: ModelConfig, pixel_aligned: bool) -> Tensor:
    act = config.activation
    frac = (config.camera_distance - act.near) / (act.far - act.near)
    frac = min(max(frac, 0.01), 0.99)
    values = {
        "xyz": [math.log(frac / (1 - frac)) if pixel_aligned else 0.0] * 3,
        "t": [0.0],
        "rgb": [0.0] * 3,
        "scale_xyz": [-1.0] * 3,
        "scale_t": [act.scale_bias + math.log(0.5)],
        "q_left": [1.0, 0.0, 0.0, 0.0],
        "q_right": [1.0, 0.0, 0.0, 0.0],
        "opacity": [0.0],
    }
    out = []
    for name, n in CHANNEL_LAYOUT:
        assert len(values[name]) == n
        out += values[name]
    return torch.tensor(out)


class LRM4D(nn.Module):
    """4D Large Reconstruction Model; see the module docstring for shapes and conventions."""

    def __init__(self, config: ModelConfig, initialize: bool = True) -> None:
        """`initialize` False leaves the parameters uninitialised, for a caller that loads every one
        of them next (`io.checkpoint.load_checkpoint`): drawing them costs time, and on the meta
        device it imports torch's compiler stack (about 1.5 s at start-up)."""
        super().__init__()
        self.config = config
        # the prior's inference-time steps also in train mode (a training recipe's choice,
        # `TrainConfig.inference_steps`; not saved: inference always runs them)
        self.inference_steps_in_training = False
        d, p = config.hidden, config.patch_size
        self.tokenizer = nn.Linear(config.patch_dim, d)
        self.token_norm = nn.LayerNorm(d)
        self.transformer = Transformer(d, config.layers, config.heads, config.mlp_hidden, config.grad_checkpointing)
        self.pixel_norm = nn.LayerNorm(d)
        self.pixel_head = nn.Linear(d, p * p * RAW_CHANNELS)
        # Free-token parameters exist only when used: parameters that never get a gradient would
        # make DistributedDataParallel fail (or need find_unused_parameters, which costs a graph walk).
        if config.num_free_tokens:
            self.free_tokens = nn.Parameter(torch.empty(config.num_free_tokens, d))
            self.free_norm = nn.LayerNorm(d)
            self.free_head = nn.Linear(d, RAW_CHANNELS)
        if config.environment:
            self.env_token = nn.Parameter(torch.empty(1, d))
            self.env_norm = nn.LayerNorm(d)
            self.env_head = nn.Linear(d, 3 * num_coefficients(config.environment_degree))
        if initialize:
            self.reset_parameters()

    # ------------------------------------------------------------------ setup
    @torch.no_grad()
    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        d, pp = self.config.hidden, self.config.patch_size**2
        small = 0.1 / math.sqrt(d)
        if self.config.parametrization == "prior":
            nn.init.normal_(self.pixel_head.weight, std=0.1 * small)
            self.pixel_head.bias.copy_(_prior_bias().repeat(pp))
        else:
            nn.init.normal_(self.pixel_head.weight, std=small)
            self.pixel_head.bias.copy_(_channel_bias(self.config, True).repeat(pp))
        if self.config.environment:
            nn.init.normal_(self.env_token, std=0.02)
            nn.init.normal_(self.env_head.weight, std=0.1 * small)
            self.env_head.bias.copy_(Environment.constant(self.config.background, self.config.environment_degree).coefficients.flatten())
        if self.config.num_free_tokens:
            nn.init.normal_(self.free_tokens, std=0.02)
            nn.init.normal_(self.free_head.weight, std=small)
            self.free_head.weight[:3].normal_(std=5 * small)
            self.free_head.bias.copy_(_channel_bias(self.config, False))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return self.tokenizer.weight.device

    # ------------------------------------------------------------------ forward
    def _autocast(self, device: torch.device):
        if device.type == "cuda" and self.config.bf16_autocast:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward_raw(
        self,
        images: Tensor,
        cameras: Cameras | Sequence[Cameras],
        times: Tensor,
        world_scale: Tensor | float | None = None,
        ground_height: Tensor | float | None = None,
    ) -> RawOutput:
        """Network output before activations. Arguments as in `forward`."""
        if images.ndim != 5:
            raise ValueError(f"images must be [B, V, 3, H, W], got {tuple(images.shape)}")
        B, V, _, H, W = images.shape
        p = self.config.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not divisible by the patch size {p}")
        if not images.is_floating_point():
            raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype} (see model.api.prepare_images)")
        h, w = H // p, W // p
        images = images.to(torch.float32)
        inputs = build_inputs(images, cameras, times, channels_last=True)  # [B, V, H, W, 10]
        x = inputs.features.reshape(B, V, h, p, w, p, -1).permute(0, 1, 2, 4, 3, 5, 6)
        x = x.reshape(B, V * h * w, self.config.patch_dim)
        n_pix = V * h * w
        with self._autocast(images.device):
            tokens = self.token_norm(self.tokenizer(x))
            if self.config.num_free_tokens:
                free = self.free_tokens.to(tokens.dtype)[None].expand(B, -1, -1)
                tokens = torch.cat([tokens, free], dim=1)
            if self.config.environment:
                tokens = torch.cat([tokens, self.env_token.to(tokens.dtype)[None].expand(B, -1, -1)], dim=1)
            tokens = self.transformer(tokens)
        tokens = tokens.float()
        pix = self.pixel_head(self.pixel_norm(tokens[:, :n_pix]))  # [B, V*h*w, p*p*20]
        pix = pix.reshape(B, V, h, w, p, p, RAW_CHANNELS).permute(0, 1, 2, 4, 3, 5, 6)
        pix = pix.reshape(B, V * H * W, RAW_CHANNELS)
        n_free = self.config.num_free_tokens
        if n_free:
            free = self.free_head(self.free_norm(tokens[:, n_pix:n_pix + n_free]))  # [B, N, 20]
        else:
            free = pix.new_zeros(B, 0, RAW_CHANNELS)
        env = None
        if self.config.environment:
            env = self.env_head(self.env_norm(tokens[:, -1])).reshape(B, 3, -1)
        prior = None
        cams = flatten_cameras(cameras, B, V)
        if self.config.parametrization == "prior":
            scale = self.config.scene_radius if world_scale is None else world_scale
            scale = torch.as_tensor(scale, dtype=torch.float32).expand(B)
            prior = depth_prior(cams.to(device=images.device), B, scale, self.config.prior).to(images.dtype)
        return RawOutput(
            pix,
            free,
            inputs.ray_origins.reshape(B, V * H * W, 3),
            inputs.ray_directions.reshape(B, V * H * W, 3),
            env,
            images,
            cams,
            torch.as_tensor(times, device=images.device, dtype=images.dtype),
            prior,
            None if ground_height is None else torch.as_tensor(ground_height, dtype=torch.float32, device=images.device).expand(B),
        )

    def decode_scene(self, raw: RawOutput) -> SceneOutput:
        """Gaussians (pixel-aligned first, then free tokens: [B, V*H*W + N, ...]) and environment."""
        act = self.config.activation
        own = None
        if self.config.parametrization == "prior":
            background = torch.tensor(self.config.background, device=raw.pixel_raw.device)

            def decode(inference: bool) -> Gaussians4D:
                return decode_prior(raw.pixel_raw, raw.images, raw.cameras, raw.times, raw.ray_origins,
                                    raw.ray_directions, raw.prior_depth, background, self.config.prior, act.scale_max,
                                    raw.ground_height, inference=inference)

            pixel = decode(not self.training or self.inference_steps_in_training)
            if self.training and self.inference_steps_in_training:
                own = decode(False)
        else:
            pixel = Gaussians4D.from_raw(raw.pixel_raw, raw.ray_origins, raw.ray_directions, act)
        if raw.free_raw.shape[1]:
            free = Gaussians4D.from_raw(raw.free_raw, activation=act)
            pixel = Gaussians4D.cat([pixel, free])
            own = None if own is None else Gaussians4D.cat([own, free])
        return SceneOutput(pixel, Environment(raw.environment) if raw.environment is not None else None, own)

    def decode(self, raw: RawOutput) -> Gaussians4D:
        """The Gaussians of `decode_scene`: [B, V*H*W + N, ...]."""
        return self.decode_scene(raw).gaussians

    def forward(
        self,
        images: Tensor,
        cameras: Cameras | Sequence[Cameras],
        times: Tensor,
        world_scale: Tensor | float | None = None,
        with_environment: bool = False,
        ground_height: Tensor | float | None = None,
    ) -> Gaussians4D | SceneOutput:
        """Reconstruct.

        Args:
            images: [B, V, 3, H, W] in [0, 1]; H, W divisible by the patch size (any V >= 1).
            cameras: the B*V cameras in the model box, one `Cameras` (element b's views at
                b*V .. b*V+V-1) or a list of B `Cameras` of V each; image size W x H.
            times: [B, V] model time of each view (normalized to [-1, 1] over the window).
            world_scale: world units per model unit (float or [B]; `SceneNormalization.scale`),
                which the "prior" parametrization needs for outward rigs (camera height above the
                ground); default `config.scene_radius`, the outward rigs' normalization.
            with_environment: return a `SceneOutput` (Gaussians and environment map).
            ground_height: height (z, world z up) of a known ground plane in the model box (float
                or [B], NaN: unknown); the "prior" parametrization puts pixels within
                `config.prior.ground_snap` of it on it. None: unknown.
        Returns:
            Gaussians4D of [B, V*H*W + N, ...] in the model box and model time, or a `SceneOutput`.
        """
        out = self.decode_scene(self.forward_raw(images, cameras, times, world_scale, ground_height))
        return out if with_environment else out.gaussians

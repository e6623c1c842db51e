"""The composed model: prefix assembly, deep-fusion LLM + action expert, flow-matching head.

Typical use by a policy::

    model = DeepFusionActionModel(deep_fusion_preset("tiny"))
    prefix = model.embed_prefix(input_ids, attention_mask, visual_tokens, visual_mask,
                                spatial_tokens, spatial_mask)
    losses = model.compute_loss(prefix, actions, state, action_is_pad)   # training
    chunk = model.sample_actions(prefix, state)                          # inference

``forward`` does both steps at once and, without actions, returns LM logits.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from vla.checks import check_finite, check_token_ids, values_checked
from vla.config import DeepFusionConfig
from vla.deep_fusion import DeepFusionDecoder, ExpertDecoder
from vla.flow_matching import (
    Guide, TimeTokenEncoder, euler_sample, interpolate, masked_velocity_loss, sample_time,
)
from vla.lora import apply_lora
from vla.masks import (
    joint_attention_mask, prefix_attention_mask, prefix_position_ids, suffix_attention_mask,
    suffix_position_ids,
)
from vla.prefix import Prefix, insert_placeholders, scatter_tokens
from vla.pretrained import build_language_model
from vla.tokenizer import IMAGE_TOKEN, SPATIAL_TOKEN


def _repeat_rows(tensor: Tensor | None, copies: int) -> Tensor | None:
    """``[B, ...]`` -> ``[B * copies, ...]`` with the copies of each row consecutive."""
    if tensor is None or copies == 1:
        return tensor
    return tensor.repeat_interleave(copies, dim=0)


def _pad_last_dim(name: str, tensor: Tensor, width: int) -> Tensor:
    """Zero-pad ``[..., n]`` to ``[..., width]``; ValueError when ``n > width``."""
    if tensor.shape[-1] > width:
        raise ValueError(f"{name} has {tensor.shape[-1]} dims, more than the configured maximum {width}")
    return nn.functional.pad(tensor, (0, width - tensor.shape[-1]))


class DeepFusionActionModel(nn.Module):
    """LLM over the prefix fused layer by layer with a flow-matching action expert on the suffix.

    Suffix layout: ``[time token, state token (when max_state_dim is set), H action tokens]``.

    Args:
        config: see :class:`vla.config.DeepFusionConfig`.
        tokenizer: tokenizer for an LLM built from config (default: the byte tokenizer);
            ignored when ``config.llm_path`` is set (the directory's tokenizer is used).
    """

    def __init__(self, config: DeepFusionConfig, tokenizer: PreTrainedTokenizerBase | None = None):
        super().__init__()
        self.config = config
        llm, lm_head, self.tokenizer = build_language_model(config, tokenizer)
        expert = ExpertDecoder.like(llm, config.expert_width, config.expert_intermediate_size)
        self.fusion = DeepFusionDecoder(llm, expert)
        self.lm_head = lm_head
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.spatial_token_id = self.tokenizer.convert_tokens_to_ids(SPATIAL_TOKEN)

        width = config.expert_width
        self.time_encoder = TimeTokenEncoder(width, config.time_min_period, config.time_max_period)
        self.state_proj = nn.Linear(config.max_state_dim, width) if config.max_state_dim else None
        self.action_in_proj = nn.Linear(config.max_action_dim, width)
        self.action_out_proj = nn.Linear(width, config.max_action_dim)
        if config.lora is not None:
            apply_lora(self, config.lora)

    @property
    def llm_width(self) -> int:
        return self.fusion.llm.config.hidden_size

    @property
    def suffix_len(self) -> int:
        return 1 + (self.state_proj is not None) + self.config.action_horizon

    def embed_prefix(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        visual_tokens: Tensor | None = None,
        visual_mask: Tensor | None = None,
        spatial_tokens: Tensor | None = None,
        spatial_mask: Tensor | None = None,
    ) -> Prefix:
        """Embed the instruction and place the visual and spatial tokens into it.

        Args:
            input_ids: ``[B, L]`` with one ``<image>`` id per visual token; ``<spatial>`` ids,
                one per spatial token, or none (then they go right after the last ``<image>``;
                inside ``torch.compile``, which cannot look for them, they must be there).
            attention_mask: ``[B, L]``, nonzero at real tokens.
            visual_tokens: ``[B, Nv, D]`` or None; ``visual_mask``: ``[B, Nv]`` or None.
            spatial_tokens: ``[B, Ns, D]`` or None; ``spatial_mask``: ``[B, Ns]`` or None.

        Returns:
            :class:`vla.prefix.Prefix` with ``embeds [B, L', D]`` and ``valid [B, L']``.
        """
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"input_ids and attention_mask must both be [B, L], got {tuple(input_ids.shape)} "
                f"and {tuple(attention_mask.shape)}"
            )
        vocab = self.fusion.llm.get_input_embeddings().num_embeddings
        check_token_ids("input_ids", input_ids, vocab)
        check_finite("visual_tokens", visual_tokens)
        check_finite("spatial_tokens", spatial_tokens)
        if spatial_tokens is not None and values_checked() and not bool((input_ids == self.spatial_token_id).any()):
            input_ids, attention_mask = insert_placeholders(
                input_ids, attention_mask, spatial_tokens.shape[1], self.spatial_token_id, self.image_token_id
            )
        embeds = self.fusion.llm.get_input_embeddings()(input_ids)
        valid = attention_mask.bool()
        for name, token_id, tokens, mask in (
            ("visual_tokens", self.image_token_id, visual_tokens, visual_mask),
            ("spatial_tokens", self.spatial_token_id, spatial_tokens, spatial_mask),
        ):
            if tokens is not None:
                embeds, valid = scatter_tokens(embeds, valid, input_ids, token_id, tokens, mask, name)
        return Prefix(embeds=embeds, valid=valid)

    def embed_suffix(self, state: Tensor | None, noisy_actions: Tensor, time: Tensor) -> Tensor:
        """``[time token, state token?, action tokens]`` -> ``[B, S, De]``.

        Args:
            state: ``[B, max_state_dim]`` (padded) or None when the config has no state token.
            noisy_actions: ``[B, H, max_action_dim]``.
            time: ``[B]``.
        """
        return self._assemble_suffix(self.state_token(state), noisy_actions, time)

    def state_token(self, state: Tensor | None) -> Tensor | None:
        """``state [B, max_state_dim]`` -> state token ``[B, 1, De]`` (None without a state token)."""
        if self.state_proj is None:
            return None
        return self.state_proj(state.to(self.state_proj.weight.dtype))[:, None]

    def _assemble_suffix(self, state_token: Tensor | None, noisy_actions: Tensor, time: Tensor) -> Tensor:
        """Time token, ``state_token [B, 1, De]`` (or None) and action tokens -> ``[B, S, De]``.

        Each action token also carries the time embedding (added), as pi0 fuses time into its
        action tokens: the velocity of ``x_t`` depends on ``t`` at every token, and reading it
        from the time token through attention alone made a tiny expert learn markedly slower.
        """
        time_token = self.time_encoder(time)
        tokens = [time_token]
        if state_token is not None:
            tokens.append(state_token)
        tokens.append(self.action_in_proj(noisy_actions.to(self.action_in_proj.weight.dtype)) + time_token)
        return torch.cat(tokens, dim=1)

    def language_logits(self, prefix: Prefix) -> Tensor:
        """LLM alone over the prefix -> LM logits ``[B, L, V]``."""
        mask = prefix_attention_mask(prefix.valid, self.config.prefix_causal)
        hidden, _ = self.fusion(prefix.embeds, None, mask, prefix_position_ids(prefix.valid))
        return self.lm_head(hidden)

    def compute_loss(
        self,
        prefix: Prefix,
        actions: Tensor,
        state: Tensor | None = None,
        action_is_pad: Tensor | None = None,
        noise: Tensor | None = None,
        time: Tensor | None = None,
        generator: torch.Generator | None = None,
        samples: int | None = None,
    ) -> dict[str, Tensor]:
        """Flow-matching loss of one joint prefix + suffix pass.

        With ``K = samples`` (default ``config.flow_samples``) the suffix is repeated ``K`` times
        in the same pass, each copy with its own noise and time and attending only to the
        prefix and itself (:func:`vla.masks.joint_attention_mask`): ``K`` draws per observation
        for the cost of one prefix.

        Args:
            prefix: from :meth:`embed_prefix`.
            actions: ``[B, H, A]`` with ``A <= max_action_dim`` real dims.
            state: ``[B, state_dim]`` with ``state_dim <= max_state_dim`` (required when the
                config has a state token).
            action_is_pad: ``[B, H]`` bool, True at padded chunk steps.
            noise: ``[B, H, max_action_dim]`` (``K = 1``) or ``[B, K, H, max_action_dim]``, or
                None to draw ``N(0, I)``.
            time: ``[B]`` (``K = 1``) or ``[B, K]``, or None to draw
                ``Beta(alpha, 1) * 0.999 + 0.001``.
            generator: RNG for the noise and time draws.
            samples: ``K``, noise/time draws per observation.

        Returns:
            ``{"loss": scalar, "flow_matching_loss": scalar, "loss_per_sample": [B]}`` (the
            per-sample loss is the mean over the ``K`` draws).
        """
        check_finite("prefix.embeds", prefix.embeds)
        batch = prefix.embeds.shape[0]
        copies = samples or self.config.flow_samples
        if copies < 1:
            raise ValueError(f"samples must be >= 1, got {copies}")
        action_dim = actions.shape[-1]
        padded = self._check_actions(actions, batch)
        state = self._prepare_state(state, batch)
        if action_is_pad is not None and action_is_pad.shape != padded.shape[:2]:
            raise ValueError(f"action_is_pad must be {tuple(padded.shape[:2])}, got {tuple(action_is_pad.shape)}")
        chunk = (self.config.action_horizon, self.config.max_action_dim)
        if noise is not None:
            allowed = [(batch, copies, *chunk)] + ([(batch, *chunk)] if copies == 1 else [])
            if tuple(noise.shape) not in allowed:
                raise ValueError(f"noise must be one of {allowed}, got {tuple(noise.shape)}")
            noise = noise.reshape(batch * copies, *chunk)
        noise = self._prepare_noise(noise, batch * copies, generator)
        if time is None:
            time = sample_time(batch * copies, self.config.time_alpha, generator, device=padded.device)
        else:
            allowed = [(batch, copies)] + ([(batch,)] if copies == 1 else [])
            if tuple(time.shape) not in allowed:
                raise ValueError(f"time must be one of {allowed}, got {tuple(time.shape)}")
        time = time.reshape(batch * copies).to(padded.device)
        noisy, target = interpolate(_repeat_rows(padded, copies), noise, time)
        velocity = self._joint_velocity(prefix, state, noisy, time, copies)
        loss, per_sample = masked_velocity_loss(velocity, target, _repeat_rows(action_is_pad, copies), action_dim)
        per_sample = per_sample.view(batch, copies).mean(dim=1)
        return {"loss": loss, "flow_matching_loss": loss.detach(), "loss_per_sample": per_sample.detach()}

    @torch.no_grad()
    def sample_actions(
        self,
        prefix: Prefix,
        state: Tensor | None = None,
        num_steps: int | None = None,
        noise: Tensor | None = None,
        use_cache: bool = True,
        action_dim: int | None = None,
        generator: torch.Generator | None = None,
        guide: Guide | None = None,
    ) -> Tensor:
        """Euler-integrate the learned velocity from noise (t=1) to actions (t=0).

        With ``use_cache`` the prefix runs once into a per-layer key/value cache and each step
        runs only the expert on the suffix against it; without, every step recomputes the whole
        joint sequence (the reference the cache is tested against).

        Args:
            prefix: from :meth:`embed_prefix`.
            state: ``[B, state_dim]`` when the config has a state token.
            num_steps: Euler steps (default ``config.num_steps``).
            noise: ``[B, H, max_action_dim]`` ``x_1``, or None to draw ``N(0, I)``.
            use_cache: reuse the prefix keys/values across steps.
            action_dim: return only the first ``action_dim`` dims.
            guide: replaces each step's velocity (:func:`vla.flow_matching.euler_sample`).

        Returns:
            ``[B, H, action_dim or max_action_dim]``.
        """
        check_finite("prefix.embeds", prefix.embeds)
        batch = prefix.embeds.shape[0]
        state = self._prepare_state(state, batch)
        noise = self._prepare_noise(noise, batch, generator)
        if use_cache:
            velocity = self.cached_velocity(prefix, state)
        else:
            def velocity(x: Tensor, t: Tensor) -> Tensor:
                return self._joint_velocity(prefix, state, x, t)
        actions = euler_sample(velocity, noise, num_steps or self.config.num_steps, guide)
        return actions[..., :action_dim] if action_dim is not None else actions

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        visual_tokens: Tensor | None = None,
        visual_mask: Tensor | None = None,
        spatial_tokens: Tensor | None = None,
        spatial_mask: Tensor | None = None,
        state: Tensor | None = None,
        actions: Tensor | None = None,
        action_is_pad: Tensor | None = None,
        noise: Tensor | None = None,
        time: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """With ``actions``: the loss dict of :meth:`compute_loss`; without: ``{"logits"}``."""
        prefix = self.embed_prefix(
            input_ids, attention_mask, visual_tokens, visual_mask, spatial_tokens, spatial_mask
        )
        if actions is None:
            return {"logits": self.language_logits(prefix)}
        return self.compute_loss(prefix, actions, state, action_is_pad, noise, time)

    def _joint_velocity(
        self, prefix: Prefix, state: Tensor | None, noisy: Tensor, time: Tensor, copies: int = 1
    ) -> Tensor:
        """Velocity ``[B * K, H, A_max]`` of ``K = copies`` suffixes per prefix in one pass.

        ``state`` has one row per prefix (its token is computed once and shared by the copies);
        ``noisy`` and ``time`` hold the ``K`` copies of each row consecutively.
        """
        batch = prefix.valid.shape[0]
        state_token = _repeat_rows(self.state_token(state), copies)
        suffix = self._assemble_suffix(state_token, noisy, time).reshape(batch, copies * self.suffix_len, -1)
        mask = joint_attention_mask(prefix.valid, self.suffix_len, self.config.prefix_causal, copies)
        positions = torch.cat(
            [prefix_position_ids(prefix.valid), suffix_position_ids(prefix.valid, self.suffix_len).repeat(1, copies)],
            dim=1,
        )
        _, suffix_out = self.fusion(prefix.embeds, suffix, mask, positions)
        return self._action_velocity(suffix_out.reshape(batch * copies, self.suffix_len, -1))

    def cached_velocity(self, prefix: Prefix, state: Tensor | None) -> Callable[[Tensor, Tensor], Tensor]:
        """Run the prefix once into the cache; return ``v(x_t [B, H, A_max], t [B])`` running only the expert.

        ``state``: ``[B, state_dim]`` when the config has a state token, else None. Call it under
        ``torch.no_grad()``: the cache is filled in place.
        """
        state = self._prepare_state(state, prefix.embeds.shape[0])
        cache = self.fusion.build_prefix_cache(
            prefix.embeds,
            prefix_attention_mask(prefix.valid, self.config.prefix_causal),
            prefix_position_ids(prefix.valid),
            suffix_attention_mask(prefix.valid, self.suffix_len),
            suffix_position_ids(prefix.valid, self.suffix_len),
        )

        state_token = self.state_token(state)  # the same at every step

        def velocity(noisy: Tensor, time: Tensor) -> Tensor:
            suffix = self._assemble_suffix(state_token, noisy, time)
            return self._action_velocity(self.fusion.forward_suffix(suffix, cache))

        return velocity

    def _action_velocity(self, suffix_out: Tensor) -> Tensor:
        """Expert output ``[B, S, De]`` -> velocity of the action tokens ``[B, H, A_max]`` (float32)."""
        return self.action_out_proj(suffix_out[:, -self.config.action_horizon:]).float()

    def _check_actions(self, actions: Tensor, batch: int) -> Tensor:
        horizon = self.config.action_horizon
        if actions.dim() != 3 or actions.shape[0] != batch or actions.shape[1] != horizon:
            raise ValueError(f"actions must be [B={batch}, H={horizon}, A], got {tuple(actions.shape)}")
        check_finite("actions", actions)
        return _pad_last_dim("actions", actions.float(), self.config.max_action_dim)

    def _prepare_state(self, state: Tensor | None, batch: int) -> Tensor | None:
        if self.state_proj is None:
            if state is not None:
                raise ValueError("state was given but the config has no state token (max_state_dim=None)")
            return None
        if state is None:
            raise ValueError(
                f"state is required: the config has a state token (max_state_dim={self.config.max_state_dim})"
            )
        if state.dim() != 2 or state.shape[0] != batch:
            raise ValueError(f"state must be [B={batch}, state_dim], got {tuple(state.shape)}")
        check_finite("state", state)
        return _pad_last_dim("state", state.float(), self.config.max_state_dim)

    def _prepare_noise(self, noise: Tensor | None, batch: int, generator: torch.Generator | None) -> Tensor:
        shape = (batch, self.config.action_horizon, self.config.max_action_dim)
        device = self.action_in_proj.weight.device
        if noise is None:
            return torch.randn(shape, generator=generator, device=device)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must be {shape}, got {tuple(noise.shape)}")
        check_finite("noise", noise)
        return noise.to(device=device, dtype=torch.float32)

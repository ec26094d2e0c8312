r"""Hugging Face ``*ForCausalLM`` models that train without the ``[tokens, vocab]`` logits.

:func:`fuse_loss` makes a transformers causal LM (or a PEFT model around one) compute its training
loss with :func:`losskit.functional.linear_cross_entropy`; :func:`unfuse_loss` restores it. No
architecture's forward is copied: the fused forward is built from what every ``PreTrainedModel``
exposes,

* its decoder (``model.base_model``, else ``model.get_decoder()``), run with the call's own
  arguments (``attention_mask``, ``position_ids``, caches, ...) to give hidden states
  :math:`H` of shape ``(B, T, D)``;
* its head ``model.get_output_embeddings()`` (weight :math:`W` ``(V, D)``, optional bias
  :math:`b` ``(V,)``; tied input embeddings are the same tensor, so their gradients add up);
* the config fields that change the logits: ``logit_scale`` (Cohere, logits times :math:`a`),
  ``logits_scaling`` (Granite, logits divided by it) and ``final_logit_softcapping`` :math:`s`
  (Gemma 2/3, logits :math:`s \tanh(z / s)`), so that the logits the loss sees are

.. math::
    z_{b,t} = \mathrm{cap}_s\big(a\,(W h_{b,t} + b)\big), \qquad
    \ell = \frac{1}{N} \sum_{(b,t):\, y_{b,t} \ne -100} -\log \mathrm{softmax}(z_{b,t})_{y_{b,t}}

with :math:`y` the labels shifted one step left (or ``shift_labels`` as given) and :math:`N` the
counted tokens, or ``num_items_in_batch`` when the caller passes it (``Trainer`` does under
gradient accumulation, so the step's loss is normalised over all of its tokens).

At :func:`fuse_loss` time one tiny batch goes through both the model's own forward and the fused
one (eval mode, no gradients); a model whose loss the fused forward does not reproduce (a logits
transform or an extra loss term losskit does not know about) is refused with a
:class:`~losskit.LossInputError`, never trained on a different loss.

A call with ``labels`` (or ``shift_labels``) returns the model's usual output class with ``loss``
and ``logits=None`` (``fuse_loss(model, keep_logits=True)`` also returns the logits, which costs
their memory again); a call without labels (generation, inference) is the model's own forward.
The loss is float32 for a bfloat16/float16 model too, as the model's own is, and
``return_dict=False`` keeps the model's tuple layout ``(loss, logits, ...)`` with None logits.

Example (a tiny Llama built from a config: nothing is downloaded):

>>> import transformers
>>> from losskit.integrations.transformers import fuse_loss, unfuse_loss
>>> _ = torch.manual_seed(0)
>>> config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
...     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
>>> model = transformers.LlamaForCausalLM(config)
>>> ids = torch.randint(64, (2, 6))
>>> own = model(input_ids=ids, labels=ids).loss
>>> model = fuse_loss(model)
>>> out = model(input_ids=ids, labels=ids)
>>> type(out).__name__, out.logits is None, bool(torch.allclose(out.loss, own, atol=1e-5))
('CausalLMOutputWithPast', True, True)
>>> model = unfuse_loss(model)
>>> bool(torch.equal(model(input_ids=ids, labels=ids).loss, own))
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import types
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import losskit.functional as LF
from losskit.checks import LossInputError

__all__ = ["fuse_loss", "is_fused", "unfuse_loss"]

# A transformers PreTrainedModel or a PEFT model around one: duck-typed (get_decoder,
# get_output_embeddings, config, ...), since transformers is an optional dependency.
HFModel = Any

STATE = "_losskit_fused"  # the attribute that holds a fused model's FusedLoss
# Arguments the fused forward consumes itself: the rest go to the decoder.
LOSS_ARGUMENTS = ("labels", "shift_labels", "num_items_in_batch", "ignore_index")
HEAD_ARGUMENTS = ("logits_to_keep", "num_logits_to_keep", "return_dict")
PROBE_SHAPE = (2, 8)  # the wrap-time check's batch: (sequences, tokens)
# Wrap-time agreement of the fused and the model's own loss, by the head's dtype: float32 sums
# over V terms in another order (about 1e-6 relative); bfloat16/float16 round the logits first.
TOLERANCE = {torch.float64: (1e-6, 1e-7), torch.float32: (1e-4, 1e-5)}
LOW_PRECISION_TOLERANCE = (2e-2, 2e-2)


@dataclasses.dataclass
class FusedLoss:
    """What :func:`fuse_loss` changed on the model, and the logits transform it found."""

    previous_forward: Any  # the instance's own ``forward`` before fusing (None: the class's)
    previous_accepts: Any  # the instance's own ``accepts_loss_kwargs`` (``_MISSING``: none)
    scale: float  # a in z = a (W h + b)
    softcap: float | None  # s in s tanh(z / s)
    keep_logits: bool
    chunk_size: int | None
    output_type: type | None = None  # the model's own output class, read by the wrap-time check


_MISSING = object()


# ----------------------------------------------------------------------------------------------
# Public calls


def fuse_loss(
    model: nn.Module,
    *,
    keep_logits: bool = False,
    chunk_size: int | None = None,
) -> nn.Module:
    """Make a transformers ``*ForCausalLM`` (or a PEFT model around one) compute its training loss
    with the fused linear+cross-entropy; returns ``model`` itself (changed in place).

    Args:
        model: a ``transformers.PreTrainedModel`` with an output embedding (``lm_head``), or a
            ``peft.PeftModel`` around one.
        keep_logits: also return the ``(B, T, V)`` logits on calls with labels (their memory
            again); by default ``logits`` is None on those calls.
        chunk_size: rows per chunk of the fused kernel; None chooses it from the shapes.

    Calls with ``labels`` or ``shift_labels`` honour ``ignore_index`` (default -100),
    ``attention_mask`` (given to the decoder; the loss counts labels, as the model's own does)
    and ``num_items_in_batch`` (sum over tokens divided by it). The model also says
    ``accepts_loss_kwargs = True``, so ``Trainer`` passes ``num_items_in_batch`` under gradient
    accumulation. Fusing a fused model again replaces its options.

    Raises:
        ModuleNotFoundError: transformers is not installed.
        LossInputError: not a transformers model with an output embedding, or the fused loss
            does not reproduce the model's own loss on a tiny batch.

    >>> import transformers
    >>> config = transformers.GPT2Config(vocab_size=50, n_embd=8, n_layer=1, n_head=2)
    >>> model = fuse_loss(transformers.GPT2LMHeadModel(config))
    >>> is_fused(model), model.accepts_loss_kwargs
    (True, True)
    """
    _require_transformers()
    target = _causal_lm(model)
    if is_fused(target):
        unfuse_loss(target)
    _head(target)  # refuses a model without a usable head before anything changes
    scale, softcap = _logit_transform(target.config)
    state = FusedLoss(
        previous_forward=target.__dict__.get("forward"),
        previous_accepts=target.__dict__.get("accepts_loss_kwargs", _MISSING),
        scale=scale, softcap=softcap, keep_logits=keep_logits, chunk_size=chunk_size,
    )
    setattr(target, STATE, state)
    target.forward = types.MethodType(_forward_with_signature(type(target)), target)
    target.accepts_loss_kwargs = True
    try:
        _verify(target, state)
    except BaseException:
        unfuse_loss(target)
        raise
    return model


def unfuse_loss(model: nn.Module) -> nn.Module:
    """Restore what :func:`fuse_loss` changed (the instance's ``forward`` and
    ``accepts_loss_kwargs``); returns ``model``. A model that is not fused is returned as is.

    >>> import transformers
    >>> config = transformers.GPT2Config(vocab_size=50, n_embd=8, n_layer=1, n_head=2)
    >>> model = unfuse_loss(fuse_loss(transformers.GPT2LMHeadModel(config)))
    >>> is_fused(model), "forward" in vars(model)
    (False, False)
    """
    target = _causal_lm(model)
    state = target.__dict__.get(STATE)
    if state is None:
        return model
    _restore(target, "forward", state.previous_forward)
    _restore(target, "accepts_loss_kwargs", state.previous_accepts)
    delattr(target, STATE)
    return model


def is_fused(model: nn.Module) -> bool:
    """Whether :func:`fuse_loss` is in effect on ``model`` (or the model inside a PEFT model).

    >>> is_fused(torch.nn.Linear(2, 2))
    False
    """
    base = getattr(model, "get_base_model", None)  # a PEFT model's
    inner = base() if callable(base) else model
    return STATE in inner.__dict__


# ----------------------------------------------------------------------------------------------
# Finding the pieces


def _require_transformers() -> types.ModuleType:
    if importlib.util.find_spec("transformers") is None:
        raise ModuleNotFoundError(
            "losskit.integrations.transformers: the `transformers` package is not installed, and "
            "fuse_loss works on its models. Fix: `pip install losskit[transformers]`."
        )
    return importlib.import_module("transformers")


def _causal_lm(model: HFModel) -> Any:
    """The transformers model to change: ``model`` itself, or the one inside a PEFT model."""
    transformers = _require_transformers()
    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    if not isinstance(inner, transformers.PreTrainedModel):
        raise LossInputError(
            f"fuse_loss: `model` is a {type(model).__name__}, not a transformers PreTrainedModel "
            f"(or a PEFT model around one), so it has no decoder and output embedding to fuse. "
            f"Fix: pass the `*ForCausalLM` model itself; for your own module, call "
            f"`losskit.functional.linear_cross_entropy(hidden, head.weight, labels)` in its "
            f"forward."
        )
    return inner


def _head(model: HFModel) -> Any:
    """The output embedding, a module with a ``(V, D)`` weight and an optional ``(V,)`` bias."""
    head = model.get_output_embeddings()
    weight = getattr(head, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        got = "None" if head is None else type(head).__name__
        raise LossInputError(
            f"fuse_loss: {type(model).__name__}.get_output_embeddings() gives {got}, not a "
            f"linear head with a (vocab, hidden) weight, so there is no vocabulary projection to "
            f"fuse. Fix: pass a `*ForCausalLM` model (a language-model head), not a base or "
            f"classification model."
        )
    return head


def _decoder(model: HFModel) -> Any:
    """The module that turns the model's inputs into the hidden states the head reads."""
    decoder = model.base_model
    if decoder is model:
        decoder = model.get_decoder()
    if decoder is model:
        raise LossInputError(
            f"fuse_loss: {type(model).__name__} has no separate decoder (`base_model` and "
            f"`get_decoder()` both give the model itself), so its hidden states cannot be read "
            f"without a copy of its forward. Fix: train it with its own loss (do not fuse it)."
        )
    return decoder


def _logit_transform(config: Any) -> tuple[float, float | None]:
    """``(a, s)`` from the config: logits become ``s tanh(a z / s)`` (``s`` None: no cap)."""
    text = config
    if callable(getattr(config, "get_text_config", None)):  # multimodal: the text model's fields
        text = config.get_text_config()
    scale = 1.0
    if getattr(text, "logit_scale", None) is not None:  # Cohere: logits * logit_scale
        scale *= float(text.logit_scale)
    if getattr(text, "logits_scaling", None) is not None:  # Granite: logits / logits_scaling
        scale /= float(text.logits_scaling)
    softcap = getattr(text, "final_logit_softcapping", None)  # Gemma 2/3
    return scale, None if softcap is None else float(softcap)


def _restore(model: nn.Module, name: str, previous: Any) -> None:
    if previous is None or previous is _MISSING:
        model.__dict__.pop(name, None)
    else:
        setattr(model, name, previous)


# ----------------------------------------------------------------------------------------------
# The fused forward


def _forward_with_signature(cls: type[nn.Module]) -> Any:
    """The fused forward as a function of ``self``, showing the class forward's signature (Trainer
    reads it to choose the dataset columns)."""

    @functools.wraps(cls.forward)
    def forward(self, *args, **kwargs):
        return _fused_forward(self, *args, **kwargs)

    return forward


def _fused_forward(model: HFModel, *args, **kwargs) -> Any:
    state: FusedLoss = model.__dict__[STATE]
    arguments = _arguments(model, args, kwargs)
    labels, shift_labels = arguments.get("labels"), arguments.get("shift_labels")
    if labels is None and shift_labels is None:  # generation, inference: the model's own forward
        return _own_forward(model, state)(*args, **kwargs)
    return_dict = arguments.pop("return_dict", None)
    keep = arguments.pop("logits_to_keep", arguments.pop("num_logits_to_keep", 0))
    loss_arguments = {name: arguments.pop(name, None) for name in LOSS_ARGUMENTS}
    outputs = _decoder(model)(**arguments, return_dict=True)
    hidden = outputs[0]  # (B, T, D): last_hidden_state
    head = _head(model)
    loss = _loss(state, head, hidden, **loss_arguments)
    logits = _logits(state, head, hidden, keep) if state.keep_logits else None
    result = _output(state.output_type, outputs, loss, logits)
    if return_dict is None:
        return_dict = getattr(model.config, "use_return_dict", True)
    return result if return_dict else _as_tuple(result)


def _own_forward(model: HFModel, state: FusedLoss) -> Any:
    if state.previous_forward is not None:
        return state.previous_forward
    return types.MethodType(type(model).forward, model)


def _arguments(model: HFModel, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's explicitly given arguments by name (``**kwargs`` flattened in)."""
    signature = inspect.signature(type(model).forward)
    bound = signature.bind(model, *args, **kwargs).arguments
    out: dict[str, Any] = {}
    for name, value in list(bound.items())[1:]:  # [0] is self
        kind = signature.parameters[name].kind
        if kind == inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind == inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise LossInputError(
                    f"fuse_loss: {type(model).__name__} got {len(value)} extra positional "
                    f"arguments, which the fused forward cannot name. Fix: pass them by keyword."
                )
        else:
            out[name] = value
    return out


def _loss(
    state: FusedLoss,
    head: Any,  # the model's output embeddings: .weight (V, D) and maybe .bias
    hidden: Tensor,
    *,
    labels: Tensor | None,
    shift_labels: Tensor | None,
    num_items_in_batch: Tensor | int | None,
    ignore_index: int | None,
) -> Tensor:
    """Next-token cross-entropy of ``hidden`` ``(B, T, D)`` through the head, as transformers'
    ``ForCausalLMLoss`` computes it on the logits."""
    ignore_index = -100 if ignore_index is None else ignore_index
    if shift_labels is None:  # position t predicts label t + 1; the last position predicts nothing
        if labels is None:
            raise ValueError("losskit bug: the fused loss was called without labels")
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]  # (B, T)
    h = hidden.reshape(-1, hidden.shape[-1])  # (B*T, D)
    y = shift_labels.reshape(-1).to(h.device)  # (B*T,)
    weight, bias = head.weight, getattr(head, "bias", None)
    if state.scale != 1.0:  # a (W h + b) = W (a h) + a b
        h = h * state.scale
        bias = None if bias is None else bias * state.scale
    with _float32_loss(h):
        loss = cast(Tensor, LF.linear_cross_entropy(  # no return_lse: one tensor
            h, weight, y, linear_bias=bias, ignore_index=ignore_index,
            reduction="mean" if num_items_in_batch is None else "sum",
            softcap=state.softcap, chunk_size=state.chunk_size,
        ))
    if num_items_in_batch is None:
        return loss
    if isinstance(num_items_in_batch, Tensor):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def _float32_loss(hidden: Tensor) -> Any:
    """A context in which the loss of a bfloat16/float16 ``hidden`` comes back float32, as the
    model's own does (transformers upcasts the logits before its cross-entropy).

    The kernel already sums in float32; autocast in ``hidden``'s own dtype casts nothing and
    makes losskit return that float32 sum instead of rounding it to ``hidden``'s dtype."""
    if hidden.dtype not in (torch.bfloat16, torch.float16):
        return contextlib.nullcontext()
    if torch.is_autocast_enabled(hidden.device.type):  # the caller's autocast: already float32
        return contextlib.nullcontext()
    return torch.autocast(hidden.device.type, dtype=hidden.dtype)


def _logits(state: FusedLoss, head: Any, hidden: Tensor, keep: int | Tensor) -> Tensor:
    """The model's logits ``(B, T', V)``, for ``keep_logits=True``."""
    rows = slice(-keep, None) if isinstance(keep, int) else keep
    logits = F.linear(hidden[:, rows, :], head.weight, getattr(head, "bias", None))
    if state.scale != 1.0:
        logits = logits * state.scale
    if state.softcap is not None:
        logits = torch.tanh(logits / state.softcap) * state.softcap
    return logits


def _output(output_type: type | None, outputs: Any, loss: Tensor, logits: Tensor | None) -> Any:
    """The model's own output class, its other fields (caches, hidden states, attentions) taken
    from the decoder's output."""
    if output_type is None:  # the wrap-time check's own call: the class is not known yet
        transformers = _require_transformers()
        output_type = transformers.modeling_outputs.CausalLMOutputWithPast
    fields = [f.name for f in dataclasses.fields(output_type) if f.name not in ("loss", "logits")]
    rest = {name: getattr(outputs, name, None) for name in fields}
    return output_type(loss=loss, logits=logits, **rest)


def _as_tuple(result: Any) -> tuple:
    """``return_dict=False``: the model's own tuple layout, ``(loss, logits, *rest)``.

    transformers' ``to_tuple()`` drops every None field; its own models always have logits, so
    ``loss, logits, past_key_values, ... = out`` holds for them. The fused output keeps that
    layout: the logits slot stays (None unless ``keep_logits``), the rest drop Nones as usual."""
    rest = tuple(value for name, value in result.items() if name not in ("loss", "logits"))
    return (result.loss, result.logits, *rest)


# ----------------------------------------------------------------------------------------------
# The wrap-time check


def _probe(model: HFModel) -> tuple[Tensor, Tensor]:
    """A tiny batch: token ids and labels, a few of them -100."""
    embeddings = model.get_input_embeddings()
    vocab = min(embeddings.weight.shape[0], _head(model).weight.shape[0])
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(vocab, PROBE_SHAPE, generator=generator)
    labels = ids.clone()
    labels[0, :3] = -100  # ignored tokens
    device = embeddings.weight.device
    return ids.to(device), labels.to(device)


def _verify(model: HFModel, state: FusedLoss) -> None:
    """Refuse (LossInputError) unless the fused loss equals the model's own on a tiny batch."""
    ids, labels = _probe(model)
    modes = [(module, module.training) for module in model.modules()]  # restored one by one
    model.eval()  # no dropout: both losses see the same network
    try:
        with torch.no_grad():
            own = _own_forward(model, state)(input_ids=ids, labels=labels, return_dict=True)
            fused = _fused_forward(model, input_ids=ids, labels=labels, return_dict=True)
    except LossInputError:
        raise
    except Exception as error:
        raise LossInputError(
            f"fuse_loss: the check on a tiny batch (input_ids and labels of shape "
            f"{tuple(ids.shape)}) failed inside {type(model).__name__}: "
            f"{type(error).__name__}: {error}. Fix: fuse a text-only `*ForCausalLM` whose forward "
            f"takes input_ids and labels, or train this model with its own loss."
        ) from error
    finally:
        for module, training in modes:
            module.training = training
    _check_agreement(model, own, fused.loss)
    state.output_type = type(own)


def _check_agreement(model: HFModel, own: Any, fused: Tensor) -> None:
    own_loss = getattr(own, "loss", None)
    if own_loss is None:
        raise LossInputError(
            f"fuse_loss: {type(model).__name__} returns no loss when given labels, so there is no "
            f"training loss to replace. Fix: pass a `*ForCausalLM` model."
        )
    rtol, atol = TOLERANCE.get(_head(model).weight.dtype, LOW_PRECISION_TOLERANCE)
    if torch.allclose(fused.float(), own_loss.float(), rtol=rtol, atol=atol):
        return
    raise LossInputError(
        f"fuse_loss: on a tiny batch the fused loss is {fused.item():.6g} but "
        f"{type(model).__name__}'s own loss is {own_loss.item():.6g} (tolerance rtol={rtol}, "
        f"atol={atol}): its forward changes the logits or the loss in a way losskit does not "
        f"reproduce (it knows the head's bias, logit_scale, logits_scaling and "
        f"final_logit_softcapping; an auxiliary loss such as a router loss is not included). "
        f"Fix: train this model with its own loss (do not fuse it), or turn the extra term off "
        f"in its config (e.g. output_router_logits=False)."
    )

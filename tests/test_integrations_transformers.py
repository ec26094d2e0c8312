"""losskit.integrations.transformers against the models' own loss, tiny models built from configs.

The oracle is each model's own forward: transformers' ``ForCausalLMLoss`` (``F.cross_entropy`` on
the materialised, float32-upcast logits). Nothing is downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

import losskit as lk  # noqa: E402
from losskit.integrations import transformers as lk_hf  # noqa: E402

V, D, B, T = 257, 32, 3, 12  # odd vocabulary: no power-of-two luck in the chunking


def _llama_like(config_cls, **extra):
    return config_cls(
        vocab_size=V, hidden_size=D, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, **extra,
    )


CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(
        vocab_size=V, n_embd=D, n_layer=2, n_head=4, n_positions=64,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    ),
    "llama": lambda: _llama_like(transformers.LlamaConfig),
    "llama-untied-bias": lambda: _llama_like(transformers.LlamaConfig, tie_word_embeddings=False),
    "qwen2": lambda: _llama_like(transformers.Qwen2Config),
    "gemma2-softcap": lambda: _llama_like(
        transformers.Gemma2Config, head_dim=8, final_logit_softcapping=2.0,
        attn_logit_softcapping=50.0, sliding_window=4, attn_implementation="eager",
    ),
    "cohere-logit-scale": lambda: _llama_like(transformers.CohereConfig, logit_scale=0.5),
    "granite-logits-scaling": lambda: _llama_like(transformers.GraniteConfig, logits_scaling=4.0),
}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS[name]())
    if name == "llama-untied-bias":  # a head bias (no stock Llama has one): the fused path adds it
        model.lm_head.bias = torch.nn.Parameter(torch.randn(V) * 0.5)
    if name == "gemma2-softcap":  # init is tiny: scale the head so the cap at 2.0 really bends
        with torch.no_grad():
            model.lm_head.weight.mul_(200.0)
    return model.train()


def batch(seed: int = 0, rows: int = B):
    """Token ids, a right-padded attention mask and labels with -100 on the padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(V, (rows, T), generator=g)
    mask = torch.ones(rows, T, dtype=torch.long)
    mask[0, T - 4:] = 0
    mask[-1, T - 1:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def loss_and_grads(model, **inputs):
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def assert_same_grads(fused, own):
    assert fused.keys() == own.keys()
    for name in own:
        torch.testing.assert_close(fused[name], own[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_loss_and_gradients_equal_the_models_own(name):
    own_model = build(name)
    ids, mask, labels = batch()
    own, own_grads = loss_and_grads(own_model, input_ids=ids, attention_mask=mask, labels=labels)
    fused_model = lk_hf.fuse_loss(copy.deepcopy(own_model))
    fused, fused_grads = loss_and_grads(
        fused_model, input_ids=ids, attention_mask=mask, labels=labels
    )
    assert type(fused) is type(own)
    assert fused.logits is None and own.logits.shape == (B, T, V)
    torch.testing.assert_close(fused.loss, own.loss, rtol=1e-5, atol=1e-6)
    assert_same_grads(fused_grads, own_grads)


def test_bfloat16_model_fuses_and_matches_within_bfloat16_rounding():
    own_model = build("gemma2-softcap").to(torch.bfloat16).eval()
    fused_model = lk_hf.fuse_loss(copy.deepcopy(own_model))  # the wrap-time check passes
    ids, mask, labels = batch()
    own = own_model(input_ids=ids, attention_mask=mask, labels=labels).loss
    fused = fused_model(input_ids=ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(fused.float(), own.float(), rtol=2e-2, atol=2e-2)


def test_softcap_changes_the_loss_so_the_gemma2_case_tests_it():
    """Guards the Gemma 2 case above: with the cap removed its loss differs clearly."""
    model = build("gemma2-softcap").eval()
    ids, mask, labels = batch()
    capped = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    model.config.final_logit_softcapping = None
    uncapped = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert abs(capped.item() - uncapped.item()) > 0.1


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_num_items_in_batch_shift_labels_and_ignore_index(name):
    own_model = build(name).eval()
    fused_model = lk_hf.fuse_loss(copy.deepcopy(own_model))
    ids, mask, labels = batch(1)
    shift = torch.roll(labels, -2, dims=1)  # any targets: the second next token, say
    shift[:, -2:] = -100
    for extra in (
        {"labels": labels, "num_items_in_batch": torch.tensor(50)},
        {"labels": labels, "num_items_in_batch": 7},
        {"labels": labels, "shift_labels": shift},
        {"labels": ids.masked_fill(mask == 0, 7), "ignore_index": 7},
    ):
        own = own_model(input_ids=ids, attention_mask=mask, **extra).loss
        fused = fused_model(input_ids=ids, attention_mask=mask, **extra).loss
        torch.testing.assert_close(fused, own, rtol=1e-5, atol=1e-6, msg=str(list(extra)))
    # Hand-derived: a sum over counted tokens over num_items_in_batch is the mean times count/n.
    mean = fused_model(input_ids=ids, labels=labels).loss
    counted = (labels[:, 1:] != -100).sum()
    summed = fused_model(input_ids=ids, labels=labels, num_items_in_batch=10).loss
    torch.testing.assert_close(summed, mean * counted / 10, rtol=1e-5, atol=1e-6)


def test_keep_logits_returns_the_models_logits_and_tuples_keep_their_order():
    own_model = build("gemma2-softcap").eval()
    fused_model = lk_hf.fuse_loss(copy.deepcopy(own_model), keep_logits=True)
    ids, mask, labels = batch()
    own = own_model(input_ids=ids, attention_mask=mask, labels=labels)
    fused = fused_model(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(fused.logits, own.logits, rtol=1e-5, atol=1e-5)
    as_tuple = fused_model(input_ids=ids, labels=labels, return_dict=False)
    torch.testing.assert_close(as_tuple[0], own_model(input_ids=ids, labels=labels).loss)


def test_calls_without_labels_and_generation_are_the_models_own():
    model = build("llama").eval()
    ids, _, _ = batch()
    logits = model(input_ids=ids).logits
    generated = model.generate(ids[:1, :4], max_new_tokens=3, do_sample=False)
    lk_hf.fuse_loss(model)
    assert torch.equal(model(input_ids=ids).logits, logits)
    assert torch.equal(model.generate(ids[:1, :4], max_new_tokens=3, do_sample=False), generated)


def test_unfuse_restores_the_model_exactly():
    model = build("qwen2").eval()
    ids, mask, labels = batch()
    before = model(input_ids=ids, attention_mask=mask, labels=labels)
    had_accepts = "accepts_loss_kwargs" in vars(model)
    assert lk_hf.fuse_loss(model) is model and lk_hf.is_fused(model)
    assert lk_hf.fuse_loss(model, keep_logits=True) is model  # fusing again replaces options
    assert lk_hf.unfuse_loss(model) is model and not lk_hf.is_fused(model)
    assert "forward" not in vars(model) and ("accepts_loss_kwargs" in vars(model)) == had_accepts
    after = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert torch.equal(after.loss, before.loss) and torch.equal(after.logits, before.logits)
    assert lk_hf.unfuse_loss(model) is model  # not fused: unchanged


class ExtraTermLlama(transformers.LlamaForCausalLM):
    """A model whose loss has a term the fused forward cannot know about."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        if out.loss is not None:
            out.loss = out.loss + 0.1 * (1 + self.lm_head.weight.square().mean())
        return out


def test_a_model_it_cannot_reproduce_is_refused_and_left_unchanged():
    torch.manual_seed(0)
    model = ExtraTermLlama(CONFIGS["llama"]())
    with pytest.raises(lk.LossInputError, match=r"(?s)own loss is .*Fix: train this model"):
        lk_hf.fuse_loss(model)
    assert not lk_hf.is_fused(model) and "forward" not in vars(model)


def test_moe_router_loss_is_refused_and_the_model_without_it_fuses():
    """Mixtral adds a router loss to its loss when output_router_logits is on: refused."""
    def mixtral(router):
        torch.manual_seed(0)
        config = _llama_like(
            transformers.MixtralConfig, num_local_experts=4, num_experts_per_tok=2,
            output_router_logits=router, router_aux_loss_coef=0.5,
        )
        return transformers.MixtralForCausalLM(config)

    with pytest.raises(lk.LossInputError, match=r"(?s)own loss is .*output_router_logits=False"):
        lk_hf.fuse_loss(mixtral(True))
    own_model = mixtral(False)
    fused_model = lk_hf.fuse_loss(copy.deepcopy(own_model))
    ids, mask, labels = batch()
    own, own_grads = loss_and_grads(own_model, input_ids=ids, attention_mask=mask, labels=labels)
    fused, fused_grads = loss_and_grads(
        fused_model, input_ids=ids, attention_mask=mask, labels=labels
    )
    torch.testing.assert_close(fused.loss, own.loss, rtol=1e-5, atol=1e-6)
    assert_same_grads(fused_grads, own_grads)


def test_gradient_checkpointing_keeps_the_gradients():
    own_model = build("qwen2")
    own_model.gradient_checkpointing_enable()
    fused_model = lk_hf.fuse_loss(copy.deepcopy(own_model))
    ids, mask, labels = batch()
    _, own_grads = loss_and_grads(own_model, input_ids=ids, attention_mask=mask, labels=labels)
    _, fused_grads = loss_and_grads(fused_model, input_ids=ids, attention_mask=mask, labels=labels)
    assert_same_grads(fused_grads, own_grads)


def test_models_without_a_head_and_other_modules_are_refused():
    with pytest.raises(lk.LossInputError, match=r"(?s)get_output_embeddings\(\) gives None.*Fix:"):
        lk_hf.fuse_loss(transformers.LlamaModel(CONFIGS["llama"]()))
    with pytest.raises(lk.LossInputError, match=r"(?s)not a transformers PreTrainedModel.*Fix:"):
        lk_hf.fuse_loss(torch.nn.Linear(3, 4))


def test_without_transformers_the_error_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name)
    )
    with pytest.raises(ModuleNotFoundError, match=r"Fix: `pip install losskit\[transformers\]`"):
        lk_hf.fuse_loss(torch.nn.Linear(3, 4))


def test_peft_lora_model_gets_the_same_gradients_and_trains():
    peft = pytest.importorskip("peft")
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    torch.manual_seed(1)
    own_model = peft.get_peft_model(build("llama"), lora)
    # LoRA's B starts at zero: move it so the adapter changes the hidden states.
    with torch.no_grad():
        for name, p in own_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    fused_model = lk_hf.fuse_loss(copy.deepcopy(own_model))
    assert lk_hf.is_fused(fused_model)
    ids, mask, labels = batch()
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    own, own_grads = loss_and_grads(own_model, **inputs)
    fused, fused_grads = loss_and_grads(fused_model, **inputs)
    assert fused_grads.keys() == own_grads.keys() and all("lora_" in n for n in fused_grads)
    torch.testing.assert_close(fused.loss, own.loss, rtol=1e-5, atol=1e-6)
    assert_same_grads(fused_grads, own_grads)
    optimizer = torch.optim.AdamW([p for p in fused_model.parameters() if p.requires_grad], 1e-2)
    first = fused.loss.item()
    for _ in range(10):
        optimizer.zero_grad()
        fused_model(**inputs).loss.backward()
        optimizer.step()
    assert fused_model(**inputs).loss.item() < first - 0.1


# ----------------------------------------------------------------------------------------------
# Trainer: gradient accumulation normalises over the step's tokens


class Rows(torch.utils.data.Dataset):
    def __init__(self, ids, mask, labels):
        rows = zip(ids, mask, labels, strict=True)
        self.items = [{"input_ids": i, "attention_mask": m, "labels": y} for i, m, y in rows]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def train_with_trainer(tmp_path, model, per_device, accumulation):
    """Two optimiser steps over 16 rows whose counted tokens differ a lot from row to row."""
    ids, mask, labels = batch(2, rows=16)
    g = torch.Generator().manual_seed(3)
    keep = torch.randint(2, T, (16,), generator=g)  # counted labels per row: 2 .. T-1
    labels = torch.where(torch.arange(T) < keep[:, None], labels, torch.full_like(labels, -100))
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation, max_steps=2, learning_rate=0.5, optim="sgd",
        lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to=[],
        use_cpu=True, seed=0, data_seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Rows(ids, mask, labels))
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return losses, {n: p.detach().clone() for n, p in model.named_parameters()}


def test_trainer_with_gradient_accumulation_equals_one_four_times_batch(tmp_path):
    base = build("llama")
    accumulated = lk_hf.fuse_loss(copy.deepcopy(base))
    one_batch = lk_hf.fuse_loss(copy.deepcopy(base))
    own = copy.deepcopy(base)  # the model's own loss on the big batch: an independent oracle
    losses_acc, weights_acc = train_with_trainer(tmp_path / "a", accumulated, 2, 4)
    losses_one, weights_one = train_with_trainer(tmp_path / "b", one_batch, 8, 1)
    losses_own, weights_own = train_with_trainer(tmp_path / "c", own, 8, 1)
    assert len(losses_acc) == len(losses_one) == 2
    # Trainer logs losses rounded to 4 digits.
    assert losses_acc == pytest.approx(losses_one, abs=2e-4)
    assert losses_one == pytest.approx(losses_own, abs=2e-4)
    changed = 0
    for name, w in weights_one.items():
        torch.testing.assert_close(weights_acc[name], w, rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(weights_own[name], w, rtol=1e-4, atol=1e-5, msg=name)
        changed += not torch.equal(w, dict(base.named_parameters())[name])
    assert changed > 0  # the steps really moved the weights


# ----------------------------------------------------------------------------------------------
# docs/integrations.md: the Hugging Face sections run as written

PAGE = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"


def hf_sections() -> dict[str, list[str]]:
    """Heading -> the Python blocks of each ``## Hugging Face ...`` section, in page order."""
    sections = re.split(r"^## ", PAGE.read_text(), flags=re.M)[1:]
    return {
        s.splitlines()[0]: re.findall(r"^```python\n(.*?)^```$", s, re.S | re.M)
        for s in sections
        if s.startswith("Hugging Face")
    }


def test_the_page_has_the_trainer_and_loop_sections():
    found = hf_sections()
    assert set(found) == {
        "Hugging Face transformers: Trainer", "Hugging Face transformers: a hand-written loop",
    }
    assert all(found.values())


@pytest.mark.parametrize("heading", list(hf_sections()))
def test_hf_section_runs(heading, capsys):
    namespace: dict = {}
    for code in hf_sections()[heading]:
        exec(compile(code, str(PAGE), "exec"), namespace)
    assert re.search(r"loss \d", capsys.readouterr().out)


def test_trainer_evaluate_gives_the_models_own_eval_loss(tmp_path):
    base = build("llama")
    ids, mask, labels = batch(4, rows=8)
    losses = []
    for model in (copy.deepcopy(base), lk_hf.fuse_loss(copy.deepcopy(base))):
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to=[], use_cpu=True,
            disable_tqdm=True,
        )
        trainer = transformers.Trainer(model=model, args=args, eval_dataset=Rows(ids, mask, labels))
        losses.append(trainer.evaluate()["eval_loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_fusing_restores_each_submodules_own_train_or_eval_mode():
    """The wrap-time check runs in eval mode; every module's flag comes back as it was."""
    model = build("llama").train()
    model.model.layers[0].eval()  # a frozen block the user keeps in eval mode
    model.model.norm.eval()
    before = {name: m.training for name, m in model.named_modules()}
    lk_hf.fuse_loss(model)
    assert {name: m.training for name, m in model.named_modules()} == before
    assert model.training and not model.model.layers[0].training


@pytest.mark.parametrize("items", [None, 40])
def test_bfloat16_model_gives_a_float32_loss_like_the_models_own(items):
    own_model = build("llama").to(torch.bfloat16).eval()
    fused_model = lk_hf.fuse_loss(copy.deepcopy(own_model))
    ids, mask, labels = batch()
    extra = {} if items is None else {"num_items_in_batch": items}
    own = own_model(input_ids=ids, attention_mask=mask, labels=labels, **extra).loss
    fused = fused_model(input_ids=ids, attention_mask=mask, labels=labels, **extra).loss
    assert own.dtype == torch.float32 and fused.dtype == torch.float32
    # Both are float32 cross-entropies of the same bfloat16 logits: far inside bf16's 2**-8.
    torch.testing.assert_close(fused, own, rtol=1e-4, atol=1e-5)
    fused.backward()
    assert fused_model.lm_head.weight.grad.dtype == torch.bfloat16


def test_return_dict_false_keeps_the_models_tuple_layout():
    own_model = build("llama").eval()
    fused_model = lk_hf.fuse_loss(copy.deepcopy(own_model))
    ids, _, labels = batch()
    own = own_model(input_ids=ids, labels=labels, return_dict=False)
    fused = fused_model(input_ids=ids, labels=labels, return_dict=False)
    assert len(fused) == len(own)  # loss, logits, past_key_values
    torch.testing.assert_close(fused[0], own[0], rtol=1e-5, atol=1e-6)
    assert fused[1] is None  # the logits slot: not the cache moved into it
    assert type(fused[2]) is type(own[2])
    loss, logits, cache = fused  # the unpacking users write
    assert loss is fused[0] and logits is None and cache is fused[2]
    kept = lk_hf.fuse_loss(fused_model, keep_logits=True)(
        input_ids=ids, labels=labels, return_dict=False
    )
    torch.testing.assert_close(kept[1], own[1], rtol=1e-5, atol=1e-5)

"""LoRA (nanor1/lora.py): PEFT as the oracle, the frozen base, the free KL reference, merging, checkpoints."""
import json
import math
from pathlib import Path

import pytest
import torch

from nanor1 import lora
from nanor1.checkpoint import load_checkpoint, save_checkpoint
from nanor1.distributed import Dist
from nanor1.model import Transformer
from nanor1.rollout import generate
from scripts import merge_lora
from tests.tiny import hf_tiny

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "data" / "tiny"


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def batch(seed=0, B=3, T=12, V=97):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T + 1), generator=g)
    return ids[:, :-1], ids[:, 1:]  # (B, T) inputs, (B, T) targets


def train_steps(model, steps, lr=1e-2, seed=0):
    """Plain forward(targets=...) + AdamW on the adapters: the update the training loop makes."""
    opt = torch.optim.AdamW(lora.trainable(model), lr=lr)
    for i in range(steps):
        ids, tgt = batch(seed + i)
        logp, _ = model(ids, targets=tgt)
        (-logp.mean()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return opt


def lora_model(folder, rank=4, seed=0, **kw):
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    torch.manual_seed(seed)
    return lora.apply_lora(model, rank, base=str(folder), **kw)


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return hf_tiny(tmp_path_factory.mktemp("m"), kind="qwen2", tied=True)


@pytest.mark.parametrize("case,targets", [
    (dict(kind="qwen2", tied=True), lora.DEFAULT_TARGETS),
    (dict(kind="qwen3", tied=False, head_dim=24), ("q_proj", "v_proj", "down_proj")),
])
def test_peft_loads_our_checkpoint_and_gives_the_same_logits(tmp_path, case, targets):
    peft = pytest.importorskip("peft")
    folder, hf = hf_tiny(tmp_path, **case)
    model = lora_model(folder, rank=4, alpha=12, targets=",".join(targets))
    train_steps(model, 3)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    cfg = json.loads((ckpt / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["task_type"], cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"]) == \
        ("LORA", "CAUSAL_LM", 4, 12, 0.0)
    assert cfg["target_modules"] == list(targets) and cfg["base_model_name_or_path"] == str(folder)
    from safetensors import safe_open
    with safe_open(ckpt / "adapter_model.safetensors", "pt") as f:
        A = f.get_tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
        B = f.get_tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
        assert len(f.keys()) == 2 * len(targets) * 2  # A and B, per target, per layer (2 layers)
    assert A.shape == (4, 64) and B.shape == (64 if case["kind"] == "qwen2" else 4 * 24, 4)

    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        base = hf(ids).logits
        theirs = peft.PeftModel.from_pretrained(hf, ckpt)(ids).logits
        ours = Transformer.from_pretrained(ckpt, dtype=torch.float32)(ids)
    assert rel_err(theirs, base) > 1e-2, "the adapters barely moved the logits: the comparison would be vacuous"
    assert rel_err(ours, theirs) < 1e-4, f"relative error {rel_err(ours, theirs):.2e}"


def test_step_zero_is_the_base_and_a_step_moves_only_adapters(qwen2):
    folder, _ = qwen2
    base = Transformer.from_pretrained(folder, dtype=torch.float32)
    model = lora_model(folder)
    ids, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(model(ids), base(ids), rtol=0, atol=0)
    A = model.model.layers[0].self_attn.q_proj.lora_A.weight
    assert A.abs().max() <= 1 / math.sqrt(64) and A.std() > 0.5 / math.sqrt(3 * 64)  # U(+-1/sqrt(in)), as PEFT
    assert all(m.lora_B.weight.eq(0).all() for m in lora.lora_layers(model))
    assert {p.dtype for p in lora.trainable(model)} == {torch.float32}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(model, 2)
    after = model.state_dict()
    adapters = set(lora.adapter_keys(model))
    assert adapters and set(before) - adapters == set(base.state_dict())  # base keys keep their HF names
    for k in before:
        if k in adapters:
            assert not torch.equal(after[k], before[k]), f"{k} did not change"
        else:
            assert torch.equal(after[k], before[k]), f"frozen {k} changed"
            assert not after[k].requires_grad


def test_adapters_disabled_is_the_base_model(qwen2):
    """The free KL reference: the policy with adapters off scores exactly what the base model scores."""
    folder, _ = qwen2
    base = Transformer.from_pretrained(folder, dtype=torch.float32)
    model = lora_model(folder)
    train_steps(model, 3)
    ids, tgt = batch(7)
    with torch.no_grad():
        ref = base(ids, targets=tgt, temperature=0.8)[0]
        with lora.adapters_disabled(model):
            off = model(ids, targets=tgt, temperature=0.8)[0]
        view = lora.BaseView(model)(ids, targets=tgt, temperature=0.8)[0]  # where a reference model would stand
        on = model(ids, targets=tgt, temperature=0.8)[0]
    torch.testing.assert_close(off, ref, rtol=0, atol=0)
    torch.testing.assert_close(view, ref, rtol=0, atol=0)
    assert (on - ref).abs().max() > 1e-2  # and the adapters are back on after the block


def test_merge_never_touches_the_base_weights(qwen2):
    folder, _ = qwen2
    for dtype in (torch.float32, torch.bfloat16):
        model = Transformer.from_pretrained(folder, dtype=dtype)
        torch.manual_seed(0)
        lora.apply_lora(model, 4)
        with torch.no_grad():
            for m in lora.lora_layers(model):
                m.lora_B.weight.normal_(0, 0.05)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        ids, _ = batch()
        with torch.no_grad():
            live = model(ids)
            for _ in range(3):  # round trips: W is never written, so nothing can accumulate
                with lora.merged(model):
                    merged = model(ids)
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k
        if dtype == torch.float32:
            assert rel_err(merged, live) < 1e-5


def sampler_trainer_mismatch(model, prompts, new=20):
    """train.py's logprob_mismatch: mean |sampler log-prob - trainer log-prob| over the sampled tokens."""
    res = generate(model, prompts, new, temperature=1.0, seed=3)
    diffs = []
    with torch.no_grad():
        for p, c, lp in zip(prompts, res.tokens, res.logprobs):
            ids = torch.tensor([p + c])
            logp, _ = model(ids[:, :-1], targets=ids[:, 1:])
            diffs.append((logp[0, len(p) - 1:] - torch.tensor(lp)).abs())
    return torch.cat(diffs).mean().item()


@pytest.mark.parametrize("dtype,floor", [(torch.float32, 1e-6), (torch.bfloat16, 1e-3)])
def test_sampler_and_trainer_score_the_same_distribution(qwen2, dtype, floor):
    """The live LoRA path in the sampler and the trainer: logprob_mismatch at the level it has without LoRA
    (fp32: ~1e-7, rounding; bf16 on the CPU: ~1e-3 - 1e-2, the KV-cache path vs the full forward)."""
    folder, _ = qwen2
    model = Transformer.from_pretrained(folder, dtype=dtype)
    prompts = [torch.randint(0, 97, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (3, 6, 9)]
    without = sampler_trainer_mismatch(model, prompts)
    torch.manual_seed(0)
    lora.apply_lora(model, 8)
    with torch.no_grad():
        for m in lora.lora_layers(model):
            m.lora_B.weight.normal_(0, 0.05)  # a trained-sized update: the distribution moves
    calls, forward = [], lora.LoRALinear.forward

    def spy(self, x):
        calls.append(1)
        return forward(self, x)

    lora.LoRALinear.forward = spy
    try:
        generate(model, prompts, 2, temperature=1.0, seed=3)
    finally:
        lora.LoRALinear.forward = forward
    assert calls, "the sampler must run the low-rank path live (a merged copy doubles the bf16 mismatch)"
    with_lora = sampler_trainer_mismatch(model, prompts)
    assert with_lora <= 2 * without + floor, (with_lora, without)


def test_gradient_checkpointing_and_the_triton_head_give_the_same_adapter_grads(qwen2):
    folder, _ = qwen2
    ids, tgt = batch(3)
    grads = {}
    for ckpt, impl in ((False, "torch"), (True, "torch"), (False, "triton")):
        model = lora_model(folder, dropout=0.1)
        train_steps(model, 1)  # B != 0, so A gets a gradient too
        model.gradient_checkpointing, model.logprob_impl = ckpt, impl
        torch.manual_seed(5)  # the same dropout masks (checkpointing replays the RNG in its recompute)
        logp, ent = model(ids, targets=tgt, temperature=0.9)
        (logp.sum() + 0.1 * ent.sum()).backward()
        grads[ckpt, impl] = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    ref = grads[False, "torch"]
    assert all(g is not None and g.abs().max() > 0 for g in ref.values())
    for key in ((True, "torch"), (False, "triton")):
        for n in ref:
            torch.testing.assert_close(grads[key][n], ref[n], rtol=1e-4, atol=1e-6, msg=lambda m: f"{key} {n}: {m}")


def test_dropout_acts_only_when_a_gradient_is_computed(qwen2):
    folder, _ = qwen2
    model = lora_model(folder, dropout=0.5)
    train_steps(model, 1)
    ids, tgt = batch(1)
    with torch.no_grad():
        a, b = model(ids), model(ids)  # rollouts and old / reference log-probs: the whole adapter
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c, d = model(ids), model(ids)  # grad enabled, training mode: two dropout masks
    assert not torch.equal(c, d)


class NoTokenizer:  # save_checkpoint copies tokenizer files; these model folders have none
    def save_pretrained(self, path):
        pass


def test_resume_is_exact(qwen2, tmp_path):
    """Two steps straight = one step, checkpoint, a fresh model (other A init) loads it, one more step. Dropout
    on, so the RNG state must come back too."""
    folder, _ = qwen2
    straight = lora_model(folder, dropout=0.2)
    opt = torch.optim.AdamW(lora.trainable(straight), lr=1e-2)

    def step(model, opt, i):
        ids, tgt = batch(i)
        logp, _ = model(ids, targets=tgt)
        (-logp.mean()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    step(straight, opt, 0)
    ckpt = save_checkpoint(tmp_path, 1, straight, opt, {"step": 1}, NoTokenizer(), Dist())
    assert sorted(p.name for p in ckpt.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                      "manifest.json", "optimizer.pt", "rng-rank0.pt",
                                                      "trainer.json"]
    step(straight, opt, 1)

    resumed = lora_model(folder, dropout=0.2, seed=99)
    opt2 = torch.optim.AdamW(lora.trainable(resumed), lr=1e-2)
    assert load_checkpoint(ckpt, resumed, opt2, Dist()) == {"step": 1}
    step(resumed, opt2, 1)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=lambda m: f"{k}: {m}")


@pytest.mark.skipif(not (TINY / "model.safetensors").is_file(), reason="data/tiny not built")
def test_merge_lora_writes_a_checkpoint_transformers_loads(tmp_path):
    model = lora_model(TINY, rank=8)
    with torch.no_grad():
        for m in lora.lora_layers(model):
            m.lora_B.weight.normal_(0, 0.05)
    ckpt, out = tmp_path / "ckpt", tmp_path / "merged"
    model.save_pretrained(ckpt)
    merge_lora.main([str(ckpt), str(out)])  # in process: a subprocess would re-import torch and transformers
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {f.name for f in out.iterdir()}
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = torch.randint(0, 306, (2, 13))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
        base = Transformer.from_pretrained(TINY, dtype=torch.float32)(ids)
    assert rel_err(ours, base) > 1e-2
    assert rel_err(theirs, ours) < 1e-5, rel_err(theirs, ours)
    # Nothing is overwritten: a second merge into the same folder is one clear error.
    with pytest.raises(ValueError, match=f"output folder {out} already exists and is not empty"):
        merge_lora.main([str(ckpt), str(out)])
    with pytest.raises(FileNotFoundError, match="is not a LoRA adapter folder"):
        merge_lora.main([str(TINY), str(tmp_path / "other")])


# ---- bad input: one clear error each ----

def test_bad_options(qwen2):
    folder, _ = qwen2
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    with pytest.raises(ValueError, match="LoRA target 'qproj' matches no layer .*q_proj"):
        lora.apply_lora(model, 4, targets="q_proj,qproj")
    with pytest.raises(ValueError, match="LoRA target 'lm_head' matches no layer"):
        lora.apply_lora(model, 4, targets=["lm_head"])
    with pytest.raises(ValueError, match="LoRA target 'mlp' matches 'model.layers.0.mlp', which is not a Linear"):
        lora.apply_lora(model, 4, targets="mlp")
    with pytest.raises(ValueError, match="LoRA needs rank > 0, got 0"):
        lora.apply_lora(model, 0)
    assert model.lora is None and not lora.lora_layers(model)  # a failed call changed nothing
    lora.apply_lora(model, 4)
    with pytest.raises(ValueError, match="already applied"):
        lora.apply_lora(model, 4)
    lora.check_options(0, 0, 0.0, ",".join(lora.DEFAULT_TARGETS))  # LoRA off: fine
    with pytest.raises(ValueError, match=r"--lora_alpha, --lora_targets given but --lora_rank is 0"):
        lora.check_options(0, 16, 0.0, "q_proj")
    with pytest.raises(ValueError, match="--lora_rank must be >= 0"):
        lora.check_options(-1, 0, 0.0, "q_proj")
    with pytest.raises(ValueError, match=r"--lora_dropout must be in \[0, 1\)"):
        lora.check_options(8, 0, 1.0, "q_proj")
    with pytest.raises(ValueError, match="--lora_targets is empty"):
        lora.check_options(8, 0, 0.0, " , ")


def test_bad_adapter_folders(qwen2, tmp_path):
    folder, _ = qwen2
    model = lora_model(folder)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)

    def edit(**changes):
        raw = json.loads((ckpt / "adapter_config.json").read_text())
        saved = dict(raw)
        raw.update(changes)
        (ckpt / "adapter_config.json").write_text(json.dumps(raw))
        return saved

    saved = edit(base_model_name_or_path=str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match=r"base model '.*gone' \(base_model_name_or_path\) not found"):
        Transformer.from_pretrained(ckpt)
    edit(**dict(saved, use_dora=True))
    with pytest.raises(NotImplementedError, match="use_dora = True is not implemented"):
        Transformer.from_pretrained(ckpt)
    edit(**dict(saved, target_modules="all-linear"))
    with pytest.raises(ValueError, match="target_modules must be a list"):
        Transformer.from_pretrained(ckpt)
    edit(**dict(saved, r=8))  # the file's tensors are rank 4
    with pytest.raises(ValueError, match=r"lora_A.weight' has shape \(4, 64\), expected \(8, 64\)"):
        Transformer.from_pretrained(ckpt)
    edit(**saved)
    from safetensors.torch import load_file, save_file
    tensors = load_file(ckpt / "adapter_model.safetensors")
    name = "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"
    save_file({k: v for k, v in tensors.items() if k != name}, ckpt / "adapter_model.safetensors")
    with pytest.raises(KeyError, match=f"missing adapter '{name}'"):
        Transformer.from_pretrained(ckpt)


def test_two_rank_lora_step_equals_one_process(qwen2, tmp_path):
    """FSDP2 shards the frozen base and the adapters alike; the adapters' update, a greedy rollout on the gathered
    weights and a checkpoint reload all match one process."""
    from tests import dist_worker
    from tests.test_distributed import torchrun
    folder, _ = qwen2
    torchrun("tests/dist_worker.py", "lora", folder, tmp_path)
    two = torch.load(tmp_path / "lora.pt")
    base = Transformer.from_pretrained(folder, dtype=torch.float32)
    one = Transformer.from_pretrained(folder, dtype=torch.float32)
    dist_worker.lora_steps(one, Dist())
    adapters = set(lora.adapter_keys(one))
    assert set(two["state"]) == set(one.state_dict())
    for k, v in one.state_dict().items():
        if k in adapters:
            torch.testing.assert_close(two["state"][k], v, rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")
        else:
            assert torch.equal(two["state"][k], base.state_dict()[k]), f"frozen {k} changed under FSDP"
    moved = max(v.abs().max().item() for k, v in one.state_dict().items() if ".lora_B." in k)  # B starts at 0
    assert moved > 1e-3, "the adapters barely moved: the comparison would be vacuous"
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        logits = one(ids)
    torch.testing.assert_close(two["logits"], logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(two["reloaded"], two["logits"], rtol=0, atol=0)
    assert two["tokens"] == generate(one, [[1, 2, 3], [4, 5]], max_new_tokens=6, temperature=0.0).tokens

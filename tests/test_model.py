"""The model against transformers on tiny random Qwen checkpoints written by transformers itself."""
import json

import pytest
import torch

from nanor1.model import Transformer
from nanor1.weights import load_config
from tests.tiny import hf_tiny

transformers = pytest.importorskip("transformers")


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("case", [
    dict(kind="qwen2", tied=True, kv_heads=2),  # tied + GQA
    dict(kind="qwen2", tied=False, kv_heads=1, max_shard_size="20KB"),  # untied + MQA + sharded
    dict(kind="qwen3", tied=False, kv_heads=2, head_dim=24),  # head_dim != hidden / heads (64 / 4)
    dict(kind="qwen3", tied=True, kv_heads=4, head_dim=16),
])
def test_logits_match_transformers(tmp_path, case):
    folder, hf = hf_tiny(tmp_path, **case)
    if case.get("max_shard_size"):
        assert (folder / "model.safetensors.index.json").is_file()
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    ids = torch.randint(0, 97, (3, 17))
    with torch.no_grad():
        ours, ref = model(ids), hf(ids).logits
    assert ours.shape == (3, 17, 97)
    err = rel_err(ours, ref)
    assert err < 1e-4, f"relative error {err:.2e}"


def test_older_config_layout(tmp_path):
    """Real Qwen2.5 config.json files: top-level rope_theta, torch_dtype, sliding_window fields present."""
    folder, hf = hf_tiny(tmp_path, rope_theta=1e6)
    raw = json.loads((folder / "config.json").read_text())
    rope = raw.pop("rope_parameters", None) or {}
    raw.pop("layer_types", None)
    raw.pop("dtype", None)
    raw.update(rope_theta=rope.get("rope_theta", 1e6), torch_dtype="float32", sliding_window=32768,
               use_sliding_window=False, max_window_layers=21, use_mrope=False, bos_token_id=96, eos_token_id=96)
    (folder / "config.json").write_text(json.dumps(raw))
    cfg = load_config(folder)
    assert cfg.rope_theta == 1e6
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        assert rel_err(model(ids), hf(ids).logits) < 1e-4


def test_bf16_load_is_sane(tmp_path):
    folder, hf = hf_tiny(tmp_path)
    model = Transformer.from_pretrained(folder)  # bf16 by default
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model.lm_head.weight is model.model.embed_tokens.weight  # the tie survives assignment
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        ours = model(ids)
        ref = hf(ids).logits
    assert torch.isfinite(ours).all()
    assert rel_err(ours, ref) < 3e-2
    # Most argmaxes agree (bf16 may flip near-ties).
    assert (ours.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_unpadded_rows(tmp_path, side):
    folder, _ = hf_tiny(tmp_path, kind="qwen3", tied=False, head_dim=24)
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    lens = [5, 12, 1]
    rows = [torch.randint(0, 97, (n,)) for n in lens]
    T = max(lens)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(T - len(r), T) if side == "left" else slice(0, len(r))
        ids[i, sl], mask[i, sl] = r, 1
    with torch.no_grad():
        batched = model(ids, attention_mask=mask)
        for i, r in enumerate(rows):
            sl = slice(T - len(r), T) if side == "left" else slice(0, len(r))
            alone = model(r[None])[0]
            torch.testing.assert_close(batched[i, sl], alone, rtol=1e-5, atol=1e-5)


def test_save_pretrained_round_trip_through_transformers(tmp_path):
    for tied in (True, False):
        folder, hf = hf_tiny(tmp_path / str(tied), kind="qwen3", tied=tied)
        model = Transformer.from_pretrained(folder, dtype=torch.float32)
        out = tmp_path / f"saved{tied}"
        model.save_pretrained(out)
        if tied:
            from safetensors import safe_open
            with safe_open(out / "model.safetensors", "pt") as f:
                assert "lm_head.weight" not in f.keys()
        back = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        ids = torch.randint(0, 97, (2, 8))
        with torch.no_grad():
            assert rel_err(back(ids).logits, hf(ids).logits) < 1e-5
            assert rel_err(Transformer.from_pretrained(out, dtype=torch.float32)(ids), hf(ids).logits) < 1e-4


def test_hidden_and_targets_paths(tmp_path):
    folder, _ = hf_tiny(tmp_path, tied=False)
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    ids = torch.randint(0, 97, (2, 6))
    tgt = torch.randint(0, 97, (2, 6))
    with torch.no_grad():
        logits = model(ids)
        hidden = model(ids, return_hidden=True)
        logp, ent = model(ids, targets=tgt, temperature=0.7)
    assert hidden.shape == (2, 6, 64)
    ref = torch.log_softmax(logits / 0.7, -1)
    torch.testing.assert_close(logp, ref.gather(-1, tgt[..., None])[..., 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent, -(ref.exp() * ref).sum(-1), rtol=1e-5, atol=1e-5)


# ---- errors: one line each, naming the problem ----

def test_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        Transformer.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Transformer.from_pretrained(tmp_path / "empty")
    folder, _ = hf_tiny(tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        Transformer.from_pretrained(folder)


def edit_config(folder, **changes):
    raw = json.loads((folder / "config.json").read_text())
    raw.update(changes)
    (folder / "config.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("changes,err,msg", [
    (dict(model_type="llama"), ValueError, "unknown model_type 'llama'"),
    (dict(use_sliding_window=True), NotImplementedError, "use_sliding_window"),
    (dict(layer_types=["sliding_attention", "full_attention"]), NotImplementedError, "sliding_attention"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), NotImplementedError, "yarn"),
    (dict(rope_parameters={"rope_type": "linear", "rope_theta": 1e4}), NotImplementedError, "linear"),
])
def test_config_errors(tmp_path, changes, err, msg):
    folder, _ = hf_tiny(tmp_path)
    edit_config(folder, **changes)
    with pytest.raises(err, match=msg):
        Transformer.from_pretrained(folder)


def test_weight_key_errors(tmp_path):
    from safetensors.torch import load_file, save_file
    folder, _ = hf_tiny(tmp_path, tied=False)
    sd = load_file(folder / "model.safetensors")
    file = folder / "model.safetensors"

    bad = dict(sd)
    bad.pop("model.layers.1.mlp.up_proj.weight")
    save_file(bad, file)
    with pytest.raises(KeyError, match="missing weight 'model.layers.1.mlp.up_proj.weight'"):
        Transformer.from_pretrained(folder)

    bad = dict(sd, **{"model.layers.0.extra.weight": torch.zeros(2)})
    save_file(bad, file)
    with pytest.raises(KeyError, match="unexpected weight 'model.layers.0.extra.weight'"):
        Transformer.from_pretrained(folder)

    bad = dict(sd, **{"model.norm.weight": torch.zeros(3)})
    save_file(bad, file)
    with pytest.raises(ValueError, match=r"'model.norm.weight' .* shape \(3,\), expected \(64,\)"):
        Transformer.from_pretrained(folder)


def test_sharded_checkpoint_with_a_missing_shard(tmp_path):
    folder, _ = hf_tiny(tmp_path, tied=False, max_shard_size="20KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (folder / shard).unlink()
    with pytest.raises(FileNotFoundError, match=f"names shard {shard}, which is missing"):
        Transformer.from_pretrained(folder)


def test_tied_model_ignores_lm_head_in_the_file(tmp_path):
    """A tied model's file may also hold lm_head.weight: it is skipped and the tie supplies the head."""
    from safetensors.torch import load_file, save_file
    folder, hf = hf_tiny(tmp_path, tied=True)
    sd = load_file(folder / "model.safetensors")
    assert "lm_head.weight" not in sd
    save_file(dict(sd, **{"lm_head.weight": torch.zeros(97, 64)}), folder / "model.safetensors")
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # the tie, not the file's zeros
    torch.testing.assert_close(model.lm_head.weight.detach(), sd["model.embed_tokens.weight"])
    ids = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        assert rel_err(model(ids), hf(ids).logits) < 1e-4


@pytest.mark.parametrize("tied", [True, False])
def test_model_logprobs_and_grads_through_triton_match_torch(tmp_path, tied):
    """forward(targets=...) through the fused Triton kernel (compiled on a GPU, the interpreter on the CPU) vs
    the torch path."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    folder, _ = hf_tiny(tmp_path, tied=tied)
    ids, tgt = torch.randint(0, 97, (3, 7), device=dev), torch.randint(0, 97, (3, 7), device=dev)
    results = {}
    for impl in ("torch", "triton"):
        model = Transformer.from_pretrained(folder, dtype=torch.float32, device=dev)
        model.logprob_impl = impl
        logp, ent = model(ids, targets=tgt, temperature=0.8)
        (logp * torch.randn(3, 7, generator=torch.Generator().manual_seed(1)).to(dev)).sum().backward()
        results[impl] = (logp.detach(), ent.detach(), {n: p.grad for n, p in model.named_parameters()})
    (lt, et, gt), (lp, ep, gp) = results["torch"], results["triton"]
    torch.testing.assert_close(lp, lt, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ep, et, rtol=1e-4, atol=1e-5)
    for name in gt:
        torch.testing.assert_close(gp[name], gt[name], rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    folder, _ = hf_tiny(tmp_path)
    ids, tgt = torch.randint(0, 97, (2, 9)), torch.randint(0, 97, (2, 9))
    grads = []
    for ckpt in (False, True):
        model = Transformer.from_pretrained(folder, dtype=torch.float32)
        model.gradient_checkpointing = ckpt
        logp, _ = model(ids, targets=tgt)
        logp.sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def ragged_groups(vocab, prompt_lens, completion_lens, G, seed=0):
    """Right-padded rows of G completions per prompt (prompt-major), with the trainer's completion positions:
    row b's completion tokens are the targets at columns [prompt_len - 1, length - 1)."""
    g = torch.Generator().manual_seed(seed)
    rows, keys, plens = [], [], []
    for i, (p, cs) in enumerate(zip(prompt_lens, completion_lens)):
        prompt = torch.randint(0, vocab, (p,), generator=g)
        for c in cs[:G]:
            rows.append(torch.cat([prompt, torch.randint(0, vocab, (c,), generator=g)]))
            keys.append(i)
            plens.append(p)
    T = max(len(r) for r in rows)
    full = torch.full((len(rows), T), 7)  # padding: any id (it only follows real tokens)
    for b, r in enumerate(rows):
        full[b, :len(r)] = r
    n = torch.tensor([len(r) for r in rows]) - torch.tensor(plens)  # completion tokens per row
    pos_rows = torch.repeat_interleave(torch.arange(len(rows)), n)
    pos_cols = torch.cat([torch.arange(p - 1, p - 1 + k) for p, k in zip(plens, n.tolist())])
    ends = torch.tensor([len(r) for r in rows]) - 1  # input columns of each row (the last token is no input)
    return full[:, :-1], full[:, 1:], (pos_rows, pos_cols), torch.tensor(plens) - 1, torch.tensor(keys), ends


@pytest.mark.parametrize("case", [dict(kind="qwen2", tied=True), dict(kind="qwen3", tied=False, head_dim=24)])
@pytest.mark.parametrize("ckpt", [False, True])
def test_shared_prefix_gives_the_same_logprobs_and_gradients(tmp_path, case, ckpt):
    """Running each prompt once for its group (shared_prefix) changes no number: log-probs, entropies and every
    parameter's gradient equal those of the rows run whole (up to fp32 summation order). Ragged prompts and
    completions, a prompt of one token (nothing shared), a key whose rows are not adjacent."""
    folder, _ = hf_tiny(tmp_path, **case)
    ids, tgt, pos, lens, keys, ends = ragged_groups(97, [5, 9, 1, 3], [[4, 7, 1], [2, 6, 3], [5, 2, 2], [8, 1, 3]],
                                                    G=3)
    perm = torch.tensor([0, 4, 1, 2, 3, 5, 6, 7, 8, 11, 10, 9])  # rows of one key scattered
    inv = torch.argsort(perm)
    ids, tgt, lens, keys, ends = ids[perm], tgt[perm], lens[perm], keys[perm], ends[perm]
    pos = (inv[pos[0]], pos[1])
    weights = torch.randn(ids.shape, generator=torch.Generator().manual_seed(1))
    results = []
    for shared in (None, (lens, keys, ends)):
        model = Transformer.from_pretrained(folder, dtype=torch.float32)
        model.gradient_checkpointing = ckpt
        logp, ent = model(ids, targets=tgt, temperature=0.8, positions=pos, shared_prefix=shared)
        (logp * weights + 0.1 * ent).sum().backward()
        results.append((logp.detach(), ent.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (l0, e0, g0), (l1, e1, g1) = results
    assert (l0[pos] != 0).all()  # every completion position was scored
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(e1, e0, rtol=1e-5, atol=1e-5)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_shared_prefix_past_its_mask_budget_runs_rows_whole(tmp_path, monkeypatch):
    """`cells` predicts the mask SharedPrefix builds; past MAX_CELLS the rows run whole, with the same numbers."""
    from nanor1.model import SharedPrefix
    folder, _ = hf_tiny(tmp_path)
    ids, tgt, pos, lens, keys, ends = ragged_groups(97, [5, 2], [[4, 7, 1], [2, 6, 3]], G=3)
    assert SharedPrefix.cells(lens, keys, ends) == SharedPrefix(lens, keys, ends, "cpu").mask.numel()
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        whole, _ = model(ids, targets=tgt, positions=pos)
        monkeypatch.setattr(SharedPrefix, "MAX_CELLS", SharedPrefix.cells(lens, keys, ends) - 1)
        monkeypatch.setattr(SharedPrefix, "__init__", None)  # building one now would fail the call
        fallback, _ = model(ids, targets=tgt, positions=pos, shared_prefix=(lens, keys, ends))
    torch.testing.assert_close(fallback, whole, rtol=0, atol=0)


def test_shared_prefix_needs_targets_and_positions(tmp_path):
    folder, _ = hf_tiny(tmp_path)
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    ids = torch.randint(0, 97, (2, 6))
    with pytest.raises(ValueError, match="shared_prefix needs targets and positions"):
        model(ids, shared_prefix=(torch.tensor([2, 2]), torch.tensor([0, 0]), torch.tensor([6, 6])))

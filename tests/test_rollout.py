"""The rollout engine on tiny random models: cache vs no cache, batching, stopping, sampling statistics."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nanor1.model import KVCache, Transformer
from nanor1.rollout import Stop, generate
from tests.tiny import hf_tiny

V = 97


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder, hf = hf_tiny(tmp_path_factory.mktemp("m"), kind="qwen2", tied=True, kv_heads=2)
    model = Transformer.from_pretrained(folder, dtype=torch.float32).eval()
    return model, hf


def greedy_no_cache(model, prompt, steps):
    seq = list(prompt)
    for _ in range(steps):
        with torch.no_grad():
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt):]


def test_greedy_cache_equals_full_forward_and_transformers(tiny):
    model, hf = tiny
    prompt = torch.randint(0, V, (7,)).tolist()
    ours = generate(model, [prompt], max_new_tokens=20, temperature=0).tokens[0]
    assert ours == greedy_no_cache(model, prompt, 20)
    ref = hf.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=None,
                      pad_token_id=0)[0, len(prompt):].tolist()
    assert ours == ref


def test_ragged_batch_equals_one_at_a_time(tiny):
    model, _ = tiny
    prompts = [torch.randint(0, V, (n,)).tolist() for n in (3, 11, 1, 6)]
    batched = generate(model, prompts, max_new_tokens=12, temperature=0).tokens
    alone = [generate(model, [p], max_new_tokens=12, temperature=0).tokens[0] for p in prompts]
    assert batched == alone


def test_sampling_independent_of_batch_composition(tiny):
    model, _ = tiny
    prompts = [torch.randint(0, V, (n,)).tolist() for n in (4, 9)]
    both = generate(model, prompts, max_new_tokens=10, temperature=1.0, n=3, seed=5).tokens
    first = generate(model, prompts[:1], max_new_tokens=10, temperature=1.0, n=3, seed=5).tokens
    # Sequence ids are positions in the output, so the first prompt's samples keep their keys.
    assert both[:3] == first
    assert generate(model, prompts, max_new_tokens=10, temperature=1.0, n=3, seed=5).tokens == both  # same seed
    assert generate(model, prompts, max_new_tokens=10, temperature=1.0, n=3, seed=6).tokens != both


def bracketed(ids):
    """A decode for tests: every id in brackets, so a stop string "<4><7>" matches exactly that id pair."""
    return "".join(f"<{x}>" for x in ids)


def expected_ending(tokens, eos, stop):
    """Cut a free-running completion at its first EOS token or completed stop sequence (kept)."""
    for i, x in enumerate(tokens):
        if x in eos or any(tokens[:i + 1][-len(q):] == q for q in stop):
            return tokens[:i + 1], False
    return tokens, True


def test_eos_and_stop_end_only_their_sequence(tiny):
    model, _ = tiny
    prompts = [torch.randint(0, V, (5,)).tolist() for _ in range(4)]
    free = generate(model, prompts, max_new_tokens=15, temperature=0).tokens
    eos, stop = [free[0][4]], [free[1][6:8]]  # something row 0 and row 1 emit mid-way
    res = generate(model, prompts, max_new_tokens=15, temperature=0,
                   stop=Stop(eos=eos, strings=[bracketed(q) for q in stop], decode=bracketed))
    ended = 0
    for i in range(4):
        want, trunc = expected_ending(free[i], eos, stop)
        assert res.tokens[i] == want and res.truncated[i] == trunc, f"row {i}"
        ended += not trunc
    assert len(res.tokens[0]) <= 5 and len(res.tokens[1]) <= 8 and ended >= 2
    assert all(len(lp) == len(tk) for lp, tk in zip(res.logprobs, res.tokens))


def test_logprobs_are_tempered_untruncated(tiny):
    model, _ = tiny
    prompt = torch.randint(0, V, (6,)).tolist()
    res = generate(model, [prompt], max_new_tokens=6, temperature=0.7, top_k=5, seed=1)
    seq = prompt + res.tokens[0]
    with torch.no_grad():
        logits = model(torch.tensor([seq]))[0, len(prompt) - 1:-1]
    ref = torch.log_softmax(logits / 0.7, -1).gather(-1, torch.tensor(res.tokens[0])[:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(res.logprobs[0]), ref, rtol=1e-4, atol=1e-4)
    assert res.truncated == [True]


def frequency_check(draws, probs, n):
    """Every token's frequency within 5 binomial standard deviations (plus one count) of its probability."""
    counts = torch.bincount(torch.tensor(draws), minlength=probs.numel()).double()
    sd = (probs * (1 - probs) / n).sqrt()
    bad = ((counts / n - probs).abs() > 5 * sd + 1.0 / n).nonzero().flatten().tolist()
    assert not bad, f"tokens {bad[:5]}: freq {(counts / n)[bad[:5]].tolist()} vs p {probs[bad[:5]].tolist()}"


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (7, 1.0), (0, 0.6)])
def test_first_token_distribution(tiny, top_k, top_p):
    model, _ = tiny
    prompt = torch.randint(0, V, (5,)).tolist()
    T, n = 1.5, 4000
    draws = [c[0] for c in generate(model, [prompt], max_new_tokens=1, temperature=T, top_k=top_k,
                                    top_p=top_p, n=n, seed=3).tokens]
    with torch.no_grad():
        p = torch.softmax(model(torch.tensor([prompt]))[0, -1].double() / T, -1)
    keep = torch.ones_like(p, dtype=torch.bool)
    if top_k:
        keep &= p >= p.topk(top_k).values[-1]
    if top_p < 1:  # the smallest set of most likely tokens whose mass reaches top_p
        sp, order = p.sort(descending=True)
        before = sp.cumsum(0) - sp
        keep_sorted = before < top_p
        keep = torch.zeros_like(keep)
        keep[order[keep_sorted]] = True
    q = torch.where(keep, p, 0)
    q = q / q.sum()
    assert all(keep[d] for d in draws), "a token outside the top-k set / nucleus was drawn"
    frequency_check(draws, q, n)


def test_nan_in_unused_cache_slots_changes_nothing(tiny, monkeypatch):
    model, _ = tiny
    prompts = [torch.randint(0, V, (n,)).tolist() for n in (2, 9, 5)]
    clean = generate(model, prompts, max_new_tokens=10, temperature=0.8, n=2, seed=4).tokens
    eos = Stop(eos=range(0, V, 7))  # rows end at different steps: compaction moves rows over the garbage too
    clean_eos = generate(model, prompts, max_new_tokens=10, temperature=0.8, n=4, seed=5, stop=eos).tokens
    assert len({len(c) for c in clean_eos}) > 2
    init = KVCache.__init__

    def poisoned(self, *a, **kw):
        init(self, *a, **kw)
        self.k.fill_(float("nan"))
        self.v.fill_(float("nan"))

    monkeypatch.setattr(KVCache, "__init__", poisoned)
    assert generate(model, prompts, max_new_tokens=10, temperature=0.8, n=2, seed=4).tokens == clean
    assert generate(model, prompts, max_new_tokens=10, temperature=0.8, n=4, seed=5, stop=eos).tokens == clean_eos


def test_cache_slots_past_each_length_stay_zero(tiny, monkeypatch):
    """The CPU decode path masks with one -inf bias and multiplies 0 x garbage: it relies on KVCache keeping
    every slot past a row's length zero, through a padded prefill (even over a poisoned buffer), the fan-out,
    decoding and compaction."""
    import nanor1.rollout as ro
    model, _ = tiny
    init, seen = KVCache.__init__, []

    def poisoned(self, *a, **kw):
        init(self, *a, **kw)
        self.k.fill_(float("nan"))
        self.v.fill_(float("nan"))
        seen.append(self)

    def check(cache):
        past = torch.arange(cache.max_len) >= cache.lengths[:, None]  # (B, S)
        for buf in (cache.k, cache.v):  # (L, B, K, S, D)
            tail = buf.permute(1, 3, 0, 2, 4)[past]  # (slots past a length, L, K, D)
            assert torch.equal(tail, torch.zeros_like(tail)) and torch.isfinite(buf).all()

    real_step = ro.decode_step

    def checked_step(model, cache, tokens):
        check(cache)
        return real_step(model, cache, tokens)

    monkeypatch.setattr(KVCache, "__init__", poisoned)
    monkeypatch.setattr(ro, "decode_step", checked_step)
    prompts = [torch.randint(0, V, (n,)).tolist() for n in (2, 9, 5)]
    res = generate(model, prompts, max_new_tokens=8, temperature=0.9, n=3, seed=1, stop=Stop(eos=range(0, V, 6)))
    assert len({len(t) for t in res.tokens}) > 2 and seen  # rows ended apart: compaction ran
    check(seen[0])


def test_fused_qkv_decoding_equals_the_three_projections(tiny, monkeypatch):
    """A decode step's q, k, v from the cache's fused matrix are the three projections' numbers; LoRA layers
    are never fused (their rollouts run the adapters live)."""
    import nanor1.model as m
    from nanor1 import lora
    model, _ = tiny
    prompts = [torch.randint(0, V, (n,)).tolist() for n in (4, 7)]
    fused = generate(model, prompts, max_new_tokens=6, temperature=0.8, n=2, seed=3)
    monkeypatch.setattr(m.Attention, "project", lambda self, x, cache=None: (self.q_proj(x), self.k_proj(x),
                                                                             self.v_proj(x)))
    plain = generate(model, prompts, max_new_tokens=6, temperature=0.8, n=2, seed=3)
    monkeypatch.undo()
    assert fused.tokens == plain.tokens
    assert np.abs(np.concatenate(fused.logprobs) - np.concatenate(plain.logprobs)).max() < 1e-5
    cache = KVCache(model.config, 2, 4, torch.float32, "cpu")
    attn = model.model.layers[0].self_attn
    x = torch.randn(2, 1, model.config.hidden_size)
    attn.project(x, cache)  # with gradients on: the projections themselves (the fused copy is detached)
    assert cache.qkv == {}
    with torch.no_grad():
        for a, b in zip(attn.project(x, cache), (attn.q_proj(x), attn.k_proj(x), attn.v_proj(x))):
            assert torch.allclose(a, b, atol=1e-6)
    assert set(cache.qkv) == {0}
    lm = Transformer(model.config).eval()
    lm.load_state_dict(model.state_dict())
    lora.apply_lora(lm, rank=2, targets="q_proj,k_proj,v_proj")
    cache = KVCache(model.config, 2, 4, torch.float32, "cpu")
    with torch.no_grad():
        lm.model.layers[0].self_attn.project(x, cache)
    assert cache.qkv == {}


def test_cache_compaction_in_place_equals_select(tiny):
    """compact() moves the fewest rows, reports their order, and equals select() in that order."""
    model, _ = tiny
    a = KVCache(model.config, 6, 9, torch.float32, "cpu")
    a.k.copy_(torch.randn_like(a.k))
    a.v.copy_(torch.randn_like(a.v))
    a.lengths = torch.tensor([3, 9, 1, 4, 7, 2])
    b = KVCache(model.config, 6, 9, torch.float32, "cpu")
    b.k, b.v, b.lengths = a.k.clone(), a.v.clone(), a.lengths.clone()
    storage = a.k.untyped_storage().data_ptr()
    for keep in ([0, 2, 3, 5], [1, 3], [0]):  # finished rows leave, step after step
        order = a.compact(np.array(keep)).tolist()
        assert sorted(order) == sorted(keep)
        if keep == [0, 2, 3, 5]:
            assert order == [0, 5, 2, 3]  # one copy: row 5 fills the hole of row 1
        b.select(torch.tensor(order))
        assert torch.equal(a.k, b.k) and torch.equal(a.v, b.v) and torch.equal(a.lengths, b.lengths)
    assert a.k.untyped_storage().data_ptr() == storage  # no new buffer: peak memory stays one cache


def test_context_overflow_is_a_clear_error(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="exceeds the model's context of 128"):
        generate(model, [[1] * 100], max_new_tokens=40)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_ids_past_the_tokenizer_vocabulary_are_never_sampled(tiny, temperature):
    """The embedding's padding rows (ids >= the tokenizer's vocab_size) are excluded even when they would
    dominate: here their logits are made the largest of all."""
    model, _ = tiny

    class Padded(Transformer):
        def forward(self, *args, **kw):
            return super().forward(*args, **kw) + torch.arange(V).ge(90) * 50.0  # ids 90.. dominate

    padded = Padded(model.config).eval()
    padded.load_state_dict(model.state_dict())
    prompts = [[1, 2, 3], [4, 5, 6, 7]]
    free = generate(padded, prompts, max_new_tokens=8, temperature=temperature, n=4, seed=1).tokens
    assert sum(t >= 90 for c in free for t in c) > len(free) * 8 // 2  # without the limit they win
    padded.vocab_limit = 90
    res = generate(padded, prompts, max_new_tokens=8, temperature=temperature, n=4, seed=1)
    assert all(0 <= t < 90 for c in res.tokens for t in c)
    assert all(math.isfinite(x) and x <= 0 for lp in res.logprobs for x in lp)
    padded.vocab_limit = V + 1
    with pytest.raises(ValueError, match="vocab_limit must lie in"):
        generate(padded, prompts, max_new_tokens=2)


def test_sampler_and_trainer_logprobs_agree_with_a_vocab_limit(tiny):
    """With model.vocab_limit set, generate() samples from the real ids only and its log-probs equal the
    trainer's fused ones (forward with targets), which normalise over the same ids."""
    model, _ = tiny
    prompt = [5, 6, 7]
    model.vocab_limit = 90
    try:
        res = generate(model, [prompt], max_new_tokens=10, temperature=0.7, n=3, seed=2)
        for comp, lps in zip(res.tokens, res.logprobs):
            assert max(comp) < 90
            seq = torch.tensor([prompt + comp])
            with torch.no_grad():
                logp, _ = model(seq[:, :-1], targets=seq[:, 1:], temperature=0.7)
            torch.testing.assert_close(logp[0, len(prompt) - 1:], torch.tensor(lps), rtol=1e-5, atol=1e-5)
            model.vocab_limit = None  # the full-vocabulary trainer normalises over 7 more ids: not the same
            with torch.no_grad():
                full, _ = model(seq[:, :-1], targets=seq[:, 1:], temperature=0.7)
            model.vocab_limit = 90
            assert (full[0, len(prompt) - 1:] - torch.tensor(lps)).abs().max() > 1e-3
    finally:
        model.vocab_limit = None


def test_decode_attention_gets_the_compute_dtype_under_autocast(tiny, monkeypatch):
    """Over fp32 master weights under bf16 autocast (one GPU's rollout), rope's fp32 angles promote q: the
    decode kernel must still get bf16 q and cache (its fast path), not fp32 q over a bf16 cache."""
    import nanor1.model as m
    model, _ = tiny
    seen, real = [], m.decode_attention
    monkeypatch.setattr(m, "decode_attention", lambda q, k, v, n, **kw: seen.append((q.dtype, k.dtype)) or real(q, k, v, n, **kw))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        generate(model, [[1, 2, 3]], max_new_tokens=3, temperature=0)
    assert seen and set(seen) == {(torch.bfloat16, torch.bfloat16)}


@pytest.mark.skipif(torch.cuda.is_available(), reason="forces Triton on CPU tensors (the interpreter); on a GPU "
                    "the kernel tests run the compiled kernels and bench/bench_rollout.py the engine")
def test_rollout_through_the_triton_kernels_matches_torch(tiny, monkeypatch):
    """The whole engine with decode attention and sampling in Triton (the interpreter on the CPU)."""
    import kernels.decode_attention as da
    import kernels.sampling as sm
    model, _ = tiny
    prompts = [torch.randint(0, V, (n,)).tolist() for n in (3, 8)]
    ref = generate(model, prompts, max_new_tokens=6, temperature=0, n=2).tokens
    calls = {"attention": 0, "sampling": 0}

    def counted(name, fn):
        def wrapper(*args, **kw):
            calls[name] += 1
            return fn(*args, **kw)
        return wrapper
    monkeypatch.setattr(da, "decode_attention_triton", counted("attention", da.decode_attention_triton))
    monkeypatch.setattr(sm, "sample_triton", counted("sampling", sm.sample_triton))
    monkeypatch.setenv("NANOR1_TRITON", "1")
    assert generate(model, prompts, max_new_tokens=6, temperature=0, n=2).tokens == ref
    assert calls["attention"] >= 5 * model.config.num_hidden_layers and calls["sampling"] >= 6  # the kernels ran


@pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / "data/tiny/model.safetensors").is_file(),
                    reason="data/tiny not built")
def test_stop_strings_match_decoded_text():
    """Stop strings are found in the decoded tail, however BPE splits them around neighbouring text."""
    from nanor1.tokenizer import Tokenizer
    tiny = Path(__file__).resolve().parents[1] / "data" / "tiny"
    model, tok = Transformer.from_pretrained(tiny, dtype=torch.float32), Tokenizer.from_pretrained(tiny)
    prompt = tok.encode("User: What is 12+34? Think, then answer in <answer> </answer>.\nAssistant: <think>")
    free = tok.decode(generate(model, [prompt], 48, temperature=0).tokens[0])
    for stop in ("</answer>", "=", ", "):
        assert stop in free
        res = generate(model, [prompt], 48, temperature=0, stop=Stop(strings=[stop], decode=tok.decode))
        text = tok.decode(res.tokens[0])
        assert stop in text and free.startswith(text) and not res.truncated[0]
        assert stop not in tok.decode(res.tokens[0][:-1])  # it stopped at the first token completing it
    with pytest.raises(ValueError, match="need decode"):
        Stop(strings=["x"])


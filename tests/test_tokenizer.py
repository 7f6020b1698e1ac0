"""Tokenizer tests on the real Qwen2.5 files in data/qwen2_tokenizer (see its SOURCE.md)."""

import json
import os
import random
import shutil

import pytest

from nanor1.tokenizer import QWEN25_DEFAULT_SYSTEM, Tokenizer, chatml

QWEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "qwen2_tokenizer")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_pretrained(QWEN)


@pytest.fixture(scope="module")
def hf_tok():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(QWEN)


def test_llamacpp_reference_cases(tok):
    with open(os.path.join(QWEN, "tokenizer_tests_llamacpp_qwen2.jsonl"), encoding="utf-8") as f:
        cases = [json.loads(line) for line in f]
    assert len(cases) == 46
    for c in cases:
        assert tok.encode(c["text"]) == c["ids"], c["text"]
        assert tok.decode(c["ids"]) == c["text"], c["ids"]


def test_spot_checks_from_source_md(tok):
    assert tok.encode("Hello world") == [9707, 1879]
    assert tok.encode("What is $2 + 3 \\times 4$? The answer is \\boxed{14}.") == [
        3838, 374, 400, 17, 488, 220, 18, 1124, 15136, 220, 19, 3, 30, 576, 4226, 374, 1124, 79075, 90, 16, 19, 7810]
    assert tok.encode("<think>") == [13708, 766, 29]  # plain BPE in Qwen2.5, not a special token


def test_special_ids_and_sizes(tok):
    assert tok.eos_token_ids == [151645] and tok.eos_token_id == 151645  # tokenizer_config names <|im_end|>
    assert tok.pad_token_id == 151643  # <|endoftext|>
    assert tok.vocab_size == 151665  # 151,643 BPE tokens + 22 added


def test_chatml_example_from_source_md(tok):
    msgs = [{"role": "user", "content": "What is 1+1?"}]
    want = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n")
    assert tok.apply_chat_template(msgs, default_system=QWEN25_DEFAULT_SYSTEM) == want
    # without a default system prompt (Qwen3's behaviour) nothing is inserted
    assert tok.apply_chat_template(msgs) == want[want.index("<|im_start|>user"):]
    assert tok.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n") == [
        151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198]


@pytest.mark.parametrize("gen", [True, False])
def test_chat_template_matches_transformers(tok, hf_tok, gen):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 1+1?\nThink."},
            {"role": "assistant", "content": "<think>easy</think> 2"}, {"role": "user", "content": "and 2+2?"}]
    for m in (msgs, msgs[1:]):
        want = hf_tok.apply_chat_template(m, tokenize=False, add_generation_prompt=gen)
        assert tok.apply_chat_template(m, add_generation_prompt=gen, default_system=QWEN25_DEFAULT_SYSTEM) == want
        assert tok.encode(want) == hf_tok(want, add_special_tokens=False)["input_ids"]


def _random_text(rng, n):
    # pieces whose NFC form is themselves (the normaliser is NFC, so only those round-trip exactly)
    pieces = ["0", "7", "12345", "3.14", " ", "  ", "\t", "\n", "\n\n", "\r\n", "   \n  ", "x", "Hello", " world",
              "你好", "世界", "数学", "🙂", "🚀", "👍🏽", "é", "Ä", "\\frac{1}{2}", "\\boxed{", "}", "$", "^", "_{",
              "<think>", "</think>", "<answer>", "</answer>", "'s", "'ll", "...", "!!", "#### ", "<|im_end|>",
              "<|endoftext|>", "<|im_start|>assistant\n"]
    return "".join(rng.choice(pieces) for _ in range(n))


def test_round_trip_random_strings(tok):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for _ in range(300):
        s = _random_text(rng, rng.randrange(1, 40))
        assert tok.decode(tok.encode(s)) == s, f"seed {seed}: {s!r}"
    batch = [_random_text(rng, 10) for _ in range(8)]
    assert tok.encode_batch(batch) == [tok.encode(s) for s in batch]
    assert tok.decode_batch(tok.encode_batch(batch)) == batch


def test_encode_matches_transformers(tok, hf_tok):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for _ in range(100):
        s = _random_text(rng, rng.randrange(1, 40))
        assert tok.encode(s) == hf_tok(s, add_special_tokens=False)["input_ids"], f"seed {seed}: {s!r}"


def test_special_tokens_in_text(tok):
    for name in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert tok.encode(name) == [tok.token_to_id(name)]
    ids = tok.encode("a<|im_end|>b")
    assert ids == [64, 151645, 65]
    assert tok.decode(ids) == "a<|im_end|>b"  # kept by default: rewards read ChatML text
    assert tok.decode(ids, skip_special_tokens=True) == "ab"
    assert 151645 not in tok.encode("<|im_end")  # a partial name is plain text


def _copy(tmp_path, names):
    for n in names:
        shutil.copyfile(os.path.join(QWEN, n), tmp_path / n)
    return str(tmp_path)


def test_eos_union_with_generation_config(tmp_path):
    path = _copy(tmp_path, ["tokenizer.json", "tokenizer_config.json"])
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 151643]}))
    t = Tokenizer.from_pretrained(path)
    assert t.eos_token_ids == [151643, 151645] and t.eos_token_id == 151645
    # a base checkpoint: no tokenizer_config.json, EOS only from generation_config.json
    os.remove(tmp_path / "tokenizer_config.json")
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 151643}))
    t = Tokenizer.from_pretrained(path)
    assert t.eos_token_ids == [151643] and t.eos_token_id == 151643 and t.pad_token_id == 151643


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.from_pretrained(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.from_pretrained(str(tmp_path / "nope"))
    path = _copy(tmp_path, ["tokenizer.json"])
    with pytest.raises(ValueError, match="no EOS token"):
        Tokenizer.from_pretrained(path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|nope|>"}))
    with pytest.raises(ValueError, match="<\\|nope\\|>"):
        Tokenizer.from_pretrained(path)
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Tokenizer.from_pretrained(path)


def test_save_pretrained_copies_files(tok, tmp_path):
    tok.save_pretrained(str(tmp_path / "ckpt"))
    for n in ("tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(QWEN, n), "rb") as a, open(tmp_path / "ckpt" / n, "rb") as b:
            assert a.read() == b.read()
    t2 = Tokenizer.from_pretrained(str(tmp_path / "ckpt"))
    assert (t2.eos_token_ids, t2.pad_token_id, t2.vocab_size) == (tok.eos_token_ids, tok.pad_token_id, tok.vocab_size)


def test_tiny_trained_tokenizer(tmp_path):
    """A tokenizer trained here, with <|endoftext|> as its only special token: nothing Qwen-specific is assumed."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
    t = HFTokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t.train_from_iterator([f"{a} + {b} = {a + b}" for a in range(50) for b in range(50)], trainer)
    t.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    tiny = Tokenizer.from_pretrained(str(tmp_path))
    assert tiny.eos_token_ids == [0] and tiny.pad_token_id == 0 and tiny.vocab_size == t.get_vocab_size()
    s = "12 + 30 = 42<|endoftext|>"
    assert tiny.encode(s)[-1] == 0 and tiny.decode(tiny.encode(s)) == s
    with pytest.raises(ValueError, match="ChatML"):
        tiny.apply_chat_template([{"role": "user", "content": "hi"}])
    # a tokenizer built in memory saves a config that names its EOS
    Tokenizer(t, [0], 0, 0).save_pretrained(str(tmp_path / "saved"))
    assert Tokenizer.from_pretrained(str(tmp_path / "saved")).eos_token_ids == [0]


def test_bad_messages():
    with pytest.raises(ValueError, match="empty"):
        chatml([])
    with pytest.raises(ValueError, match="message 1"):
        chatml([{"role": "user", "content": "a"}, {"role": "user"}])


def test_tokenizer_and_model_vocab_must_fit():
    tok = Tokenizer.from_pretrained(QWEN)
    tok.check_model(151936)  # Qwen2.5's padded embedding: fine
    tok.check_model(tok.vocab_size)
    with pytest.raises(ValueError, match="151665 tokens but the model's embedding has 97 rows"):
        tok.check_model(97)

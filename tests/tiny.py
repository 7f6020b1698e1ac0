"""Tiny random Qwen checkpoints written by transformers' own save_pretrained (the test oracle)."""
import torch
import transformers


def hf_tiny(tmp_path, kind="qwen2", tied=True, kv_heads=2, head_dim=None, max_shard_size=None, **kw):
    """A random HF model saved with save_pretrained; returns (folder, hf_model)."""
    torch.manual_seed(0)
    common = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=128,
                  tie_word_embeddings=tied, rms_norm_eps=1e-6, **kw)
    if kind == "qwen2":
        cfg = transformers.Qwen2Config(**common)
        model = transformers.Qwen2ForCausalLM(cfg)
    else:
        cfg = transformers.Qwen3Config(head_dim=head_dim or 16, **common)
        model = transformers.Qwen3ForCausalLM(cfg)
    # Random biases and norm weights, so that a missing bias or a norm applied on the wrong axis shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)
    model = model.float().eval()
    folder = tmp_path / "hf"
    model.save_pretrained(folder, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    return folder, model

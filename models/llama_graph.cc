// The Llama step graph in primitive ops (DESIGN.md: models/).
#include "models/llama_graph.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "ir/builder.h"
#include "ir/checked_arithmetic.h"
#include "ir/ops.h"

namespace kiln {
namespace {

Dim sym(const char* name, int64_t offset = 0) { return Dim::symbolic(name, offset); }
Dim c(int64_t v) { return Dim::constant(v); }

class LlamaBuilder {
 public:
  LlamaBuilder(const ModelConfig& config, const StepLimits& limits, Graph& graph)
      : cfg_(config), lim_(limits), b_(graph), dt_(limits.dtype) {}

  absl::Status build() {
    const int64_t max_context = lim_.max_context > 0 ? lim_.max_context : cfg_.max_context;
    const int64_t pages_per_seq = (max_context + lim_.page_size - 1) / lim_.page_size;
    b_.symbol("T", lim_.max_tokens);
    b_.symbol("S", lim_.max_seqs);
    b_.symbol("P", lim_.max_seqs * pages_per_seq);
    b_.symbol("NP", lim_.max_pool_pages);
    b_.symbol("K", max_context);

    tokens_ = b_.input("tokens", {DType::kI32, {sym("T")}});
    positions_ = b_.input("positions", {DType::kI32, {sym("T")}});
    slot_mapping_ = b_.input("slot_mapping", {DType::kI32, {sym("T")}});
    qo_indptr_ = b_.input("qo_indptr", {DType::kI32, {sym("S", 1)}});
    kv_page_indptr_ = b_.input("kv_page_indptr", {DType::kI32, {sym("S", 1)}});
    kv_page_indices_ = b_.input("kv_page_indices", {DType::kI32, {sym("P")}});
    kv_last_page_len_ = b_.input("kv_last_page_len", {DType::kI32, {sym("S")}});
    const Type cache{lim_.cache_dtype(),
                     {sym("NP"), c(lim_.page_size), c(cfg_.num_kv_heads), c(cfg_.head_dim)}};
    // An fp8e4m3 cache's scales: one per (slot, KV head), with the pages' structure, so a page
    // (shared by the prefix cache, or copied on write) carries its own scales.
    const Type scales{DType::kF32, {sym("NP"), c(lim_.page_size), c(cfg_.num_kv_heads)}};
    const bool scaled = lim_.cache_dtype() == DType::kFP8E4M3;
    for (int64_t l = 0; l < cfg_.num_layers; ++l) {
      k_caches_.push_back(b_.input(absl::StrCat("k_cache.", l), cache));
      v_caches_.push_back(b_.input(absl::StrCat("v_cache.", l), cache));
      if (scaled) {
        k_scales_.push_back(b_.input(absl::StrCat("k_scales.", l), scales));
        v_scales_.push_back(b_.input(absl::StrCat("v_scales.", l), scales));
      }
    }

    Value* embed = matrix_param("embed", cfg_.vocab_size, cfg_.hidden_size);
    Value* h = b_.gather(embed, tokens_);  // h: [T, hidden], the residual stream
    build_rope_tables(max_context);
    for (int64_t l = 0; l < cfg_.num_layers; ++l) h = layer(l, h);
    Value* last =
        b_.last_token_rows(h, qo_indptr_);  // [S, hidden]: norm is per row, so select first
    Value* normed = rms_norm(last, vector_param("final_norm", cfg_.hidden_size));
    Value* head =
        cfg_.tie_embeddings ? embed : matrix_param("lm_head", cfg_.vocab_size, cfg_.hidden_size);
    Value* logits = b_.matmul(normed, head);  // [S, vocab]
    if (dt_ != DType::kF32) logits = b_.cast(logits, DType::kF32);
    b_.output("logits", logits);
    return b_.status();
  }

 private:
  Value* matrix_param(const std::string& name, int64_t rows, int64_t cols) {
    return b_.param(name, {dt_, {c(rows), c(cols)}});
  }
  Value* vector_param(const std::string& name, int64_t n) { return b_.param(name, {dt_, {c(n)}}); }

  // RMSNorm as its arithmetic: x * rsqrt(mean(x * x) + eps) * w.
  Value* rms_norm(Value* x, Value* w) {
    Value* mean_sq = b_.reduce_mean(b_.mul(x, x));  // [..., 1]
    Value* inv_rms = b_.rsqrt(b_.add(mean_sq, b_.constant(cfg_.rms_eps, dt_)));
    return b_.mul(b_.mul(x, inv_rms), w);
  }

  Attributes rope_attrs(const char* part, int64_t max_positions) const {
    Attributes a;
    a.set("part", std::string(part));
    a.set("theta", cfg_.rope_theta);
    a.set("rotary_dim", cfg_.head_dim);
    a.set("max_positions", max_positions);
    a.set("layout", std::string(cfg_.rope_interleaved ? "interleaved" : "half"));
    if (cfg_.rope_scaling) {
      a.set("scaling", std::string("llama3"));
      a.set("scaling_factor", cfg_.rope_scaling->factor);
      a.set("scaling_low_freq_factor", cfg_.rope_scaling->low_freq_factor);
      a.set("scaling_high_freq_factor", cfg_.rope_scaling->high_freq_factor);
      a.set("scaling_original_max_positions", cfg_.rope_scaling->original_max_positions);
    }
    return a;
  }

  // cos/sin of each token's position, shared by every layer: [T, 1, head_dim] in the compute dtype.
  void build_rope_tables(int64_t max_positions) {
    for (const char* part : {"cos", "sin"}) {
      Value* table = b_.op1(OpKind::kRopeTable, {}, rope_attrs(part, max_positions));  // [ctx, D]
      Value* rows = b_.gather(table, positions_);                                      // [T, D]
      if (dt_ != DType::kF32) rows = b_.cast(rows, dt_);
      Value* per_head = b_.reshape(rows, {0, 1, cfg_.head_dim});  // [T, 1, D]
      (std::string_view(part) == "cos" ? cos_ : sin_) = per_head;
    }
  }

  // x: [T, heads, D] -> x * cos + rotate(x) * sin
  Value* rope(Value* x) {
    const int64_t d = cfg_.head_dim;
    Value* rotated = nullptr;
    if (cfg_.rope_interleaved) {
      // pairs (2i, 2i+1): rotate(x)[2i] = -x[2i+1], rotate(x)[2i+1] = x[2i]
      Value* pairs = b_.reshape(x, {0, 0, d / 2, 2});  // [T, H, D/2, 2]
      Value* even = b_.slice(pairs, -1, 0, 1);
      Value* odd = b_.slice(pairs, -1, 1, 2);
      rotated = b_.reshape(b_.concat({b_.neg(odd), even}, -1), {0, 0, d});
    } else {
      // rotate-half: rotate(x) = concat(-x[D/2:], x[:D/2])
      Value* lo = b_.slice(x, -1, 0, d / 2);
      Value* hi = b_.slice(x, -1, d / 2, d);
      rotated = b_.concat({b_.neg(hi), lo}, -1);
    }
    Value* x_cos = b_.mul(x, cos_);
    Value* rotated_sin = b_.mul(rotated, sin_);
    return b_.add(x_cos, rotated_sin);
  }

  Value* projection(Value* x, const std::string& prefix, const char* proj, const char* bias,
                    int64_t out_features) {
    Value* y =
        b_.matmul(x, matrix_param(absl::StrCat(prefix, proj), out_features, cfg_.hidden_size));
    if (cfg_.attention_bias && bias != nullptr) {
      y = b_.add(y, vector_param(absl::StrCat(prefix, bias), out_features));
    }
    return y;
  }

  Value* attention(int64_t l, Value* x) {
    const std::string prefix = absl::StrCat("layers.", l, ".");
    const int64_t hq = cfg_.num_heads, hkv = cfg_.num_kv_heads, d = cfg_.head_dim;
    Value* q =
        b_.reshape(projection(x, prefix, "q_proj", "q_bias", hq * d), {0, hq, d});  // [T, Hq, D]
    Value* k =
        b_.reshape(projection(x, prefix, "k_proj", "k_bias", hkv * d), {0, hkv, d});  // [T, Hkv, D]
    Value* v = b_.reshape(projection(x, prefix, "v_proj", "v_bias", hkv * d), {0, hkv, d});
    q = rope(q);
    k = rope(k);
    // An fp8e4m3 cache: the writes quantize and return the scale arrays, the reads take them.
    const bool scaled = !k_scales_.empty();
    Value* k_scales = scaled ? k_scales_[l] : nullptr;
    Value* v_scales = scaled ? v_scales_[l] : nullptr;
    std::vector<Value*> k_write =
        b_.op(OpKind::kKvWrite, KvWriteOp::operands(k_caches_[l], k, slot_mapping_, k_scales));
    std::vector<Value*> v_write =
        b_.op(OpKind::kKvWrite, KvWriteOp::operands(v_caches_[l], v, slot_mapping_, v_scales));
    if (k_write.empty() || v_write.empty()) return nullptr;  // b_.status() says why
    Value* k_cache = k_write[KvWriteOp::kCacheOut];
    Value* v_cache = v_write[KvWriteOp::kCacheOut];
    if (scaled) {
      k_scales = k_write[KvWriteOp::kScalesOut];
      v_scales = v_write[KvWriteOp::kScalesOut];
    }
    Attributes qk_attrs;
    qk_attrs.set("kv_dim", std::string("K"));
    std::vector<Value*> qk_in = {
        q, k_cache, qo_indptr_, kv_page_indptr_, kv_page_indices_, kv_last_page_len_};
    if (scaled) qk_in.push_back(k_scales);
    Value* scores =
        b_.op1(OpKind::kPagedQk, std::move(qk_in), std::move(qk_attrs));  // f32[T, Hq, K]
    scores = b_.mul(scores, b_.constant(1.0 / std::sqrt(static_cast<double>(d)), DType::kF32));
    scores = b_.op1(OpKind::kCausalMask, {scores, positions_});
    // softmax over the KV axis: max, sub, exp, sum, div
    Value* shifted = b_.sub(scores, b_.reduce_max(scores));
    Value* e = b_.exp(shifted);
    Value* probs = b_.div(e, b_.reduce_sum(e));
    std::vector<Value*> pv_in = {probs,           v_cache,          qo_indptr_,
                                 kv_page_indptr_, kv_page_indices_, kv_last_page_len_};
    Attributes pv_attrs;
    if (scaled) {
      pv_in.push_back(v_scales);
      pv_attrs.set("dtype", dt_);  // dequantized V rows come out in the compute dtype
    }
    Value* out = b_.op1(OpKind::kPagedPv, std::move(pv_in), std::move(pv_attrs));
    out = b_.reshape(out, {0, hq * d});  // [T, Hq*D]
    return b_.matmul(out, b_.param(prefix + "o_proj", {dt_, {c(cfg_.hidden_size), c(hq * d)}}));
  }

  Value* mlp(int64_t l, Value* x) {
    const std::string prefix = absl::StrCat("layers.", l, ".");
    const int64_t f = cfg_.intermediate_size;
    Value* gate = b_.matmul(x, matrix_param(prefix + "gate_proj", f, cfg_.hidden_size));  // [T, F]
    Value* up = b_.matmul(x, matrix_param(prefix + "up_proj", f, cfg_.hidden_size));
    Value* act = b_.mul(b_.silu(gate), up);  // SwiGLU
    return b_.matmul(act, b_.param(prefix + "down_proj", {dt_, {c(cfg_.hidden_size), c(f)}}));
  }

  Value* layer(int64_t l, Value* h) {
    const std::string prefix = absl::StrCat("layers.", l, ".");
    Value* attn = attention(l, rms_norm(h, vector_param(prefix + "attn_norm", cfg_.hidden_size)));
    h = b_.add(h, attn);
    Value* ffn = mlp(l, rms_norm(h, vector_param(prefix + "mlp_norm", cfg_.hidden_size)));
    return b_.add(h, ffn);
  }

  const ModelConfig& cfg_;
  const StepLimits& lim_;
  GraphBuilder b_;
  DType dt_;
  Value* tokens_ = nullptr;
  Value* positions_ = nullptr;
  Value* slot_mapping_ = nullptr;
  Value* qo_indptr_ = nullptr;
  Value* kv_page_indptr_ = nullptr;
  Value* kv_page_indices_ = nullptr;
  Value* kv_last_page_len_ = nullptr;
  std::vector<Value*> k_caches_;
  std::vector<Value*> v_caches_;
  std::vector<Value*> k_scales_;  // fp8e4m3 caches only
  std::vector<Value*> v_scales_;
  Value* cos_ = nullptr;
  Value* sin_ = nullptr;
};

}  // namespace

absl::Status build_llama(const ModelConfig& config, const StepLimits& limits, Graph& graph) {
  if (absl::Status s = config.validate(); !s.ok()) return s;
  if (limits.max_tokens <= 0 || limits.max_seqs <= 0 || limits.page_size <= 0 ||
      limits.max_pool_pages <= 0 || limits.max_context < 0) {
    return absl::InvalidArgumentError("step limits must be positive");
  }
  if (config.sliding_window > 0 && limits.max_context > config.sliding_window) {
    // Full causal attention equals the model's sliding-window attention only inside the window.
    return absl::InvalidArgumentError(absl::StrCat(
        "max context ", limits.max_context, " exceeds the model's sliding_window of ",
        config.sliding_window,
        ": sliding-window attention is not implemented, so positions past the window would be "
        "computed wrongly; use a max context of at most ",
        config.sliding_window));
  }
  // The symbols' bounds multiply into buffer sizes (plan-memory checks those); their own
  // products must fit too: P = S x pages per sequence.
  const int64_t context = limits.max_context > 0 ? limits.max_context : config.max_context;
  if (!checked_product({limits.max_seqs, context / limits.page_size + 1}) ||
      !checked_product({limits.max_pool_pages, limits.page_size})) {
    return absl::InvalidArgumentError(
        "step limits overflow: max sequences x context pages or pool pages x page size exceeds "
        "2^63");
  }
  const DType kv = limits.cache_dtype();
  if (kv != limits.dtype && kv != DType::kFP8E4M3) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache dtype ", dtype_name(kv),
                                                   ": the cache holds the activations' dtype (",
                                                   dtype_name(limits.dtype), ") or fp8e4m3"));
  }
  if (graph.num_nodes() > 0 || !graph.inputs().empty()) {
    return absl::InvalidArgumentError("build_llama needs an empty graph");
  }
  graph.set_name(config.architecture);
  return LlamaBuilder(config, limits, graph).build();
}

}  // namespace kiln

// The flash_attention op's lowering (see attention.h).
#include "codegen/families/attention.h"

#include "absl/strings/str_cat.h"
#include "codegen/families/cascade_attention.h"
#include "codegen/families/flash_attention_decode.h"
#include "codegen/families/flash_attention_prefill.h"
#include "codegen/families/rope.h"
#include "ir/ops.h"

namespace kiln {
namespace {

// The op's operands by name, read through ir/ops.h (the one definition of their order).
struct AttentionOperands {
  const Value *q, *k, *v, *k_cache, *v_cache, *positions, *slot_mapping, *qo_indptr,
      *kv_page_indptr, *kv_page_indices, *kv_last_page_len;
  const Value *k_scales, *v_scales;  // fp8e4m3 caches' scale arrays; null otherwise
  const Value *out, *k_cache_out, *v_cache_out;

  explicit AttentionOperands(const Node& n) {
    const FlashAttentionOp op(n);
    const PageTableOperands pages = op.pages();
    q = op.q(), k = op.k(), v = op.v(), k_cache = op.k_cache(), v_cache = op.v_cache();
    k_scales = op.k_scales(), v_scales = op.v_scales();
    positions = op.positions(), slot_mapping = op.slot_mapping();
    qo_indptr = pages.qo_indptr, kv_page_indptr = pages.kv_page_indptr;
    kv_page_indices = pages.kv_page_indices, kv_last_page_len = pages.kv_last_page_len;
    out = op.output(), k_cache_out = op.k_cache_out(), v_cache_out = op.v_cache_out();
  }
};

}  // namespace

std::vector<EntryDecl> attention_metadata_entry() {
  return {{"const int*", "positions"},
          {"const int*", "qo_indptr"},
          {"const int*", "kv_page_indptr"},
          {"const int*", "kv_page_indices"},
          {"const int*", "kv_last_page_len"},
          {"int", "num_seqs"},
          {"int", "num_kv_heads"},
          {"int", "page_size"},
          {"float", "scale"}};
}

absl::Status lower_flash_attention(const Node& n, LoweringContext& ctx) {
  const AttentionOperands op(n);
  const Type& q = op.q->type;            // [T, Hq, d]
  const Type& cache = op.k_cache->type;  // [NP, page_size, Hkv, d]
  const DType dt = q.dtype;
  if (dt != DType::kBF16 && dt != DType::kF16) {
    return ctx.unsupported(
        "flash_attention kernels use bf16/f16 tensor cores (compile the model with --dtype bf16 "
        "or f16)");
  }
  const KvCacheKind cache_kind = kv_cache_kind(op.k_cache);
  if (cache.dtype != dt && cache_kind != KvCacheKind::kFp8E4M3) {
    return ctx.unsupported("KV cache dtype differs from q (and is not fp8e4m3)");
  }
  if (cache_kind == KvCacheKind::kFp8E4M3 && (op.k_scales == nullptr || op.v_scales == nullptr ||
                                              kv_cache_kind(op.v_cache) != KvCacheKind::kFp8E4M3)) {
    return ctx.unsupported("an fp8e4m3 KV cache needs fp8e4m3 K and V caches with scale arrays");
  }
  absl::StatusOr<int64_t> hq = const_dim(q.shape[1], "query heads");
  absl::StatusOr<int64_t> hkv = const_dim(op.k->type.shape[1], "KV heads");
  absl::StatusOr<int64_t> d = const_dim(q.shape[2], "head_dim");
  absl::StatusOr<int64_t> ps = const_dim(cache.shape[1], "page size");
  for (const auto* s : {&hq, &hkv, &d, &ps}) {
    if (!s->ok()) return ctx.unsupported(std::string(s->status().message()));
  }
  if (*d % 16 != 0 || *d > 256) return ctx.unsupported("head_dim must be a multiple of 16, <= 256");
  const int64_t g = *hq / *hkv;
  if (g > 16) return ctx.unsupported("GQA groups larger than 16 are not supported");
  absl::StatusOr<double> scale = n.attrs.get_float("scale");
  if (!scale.ok()) return scale.status();

  // Tuning knobs (attributes the autotuner fills; DESIGN.md), with defaults that fit 48 KB of
  // static shared memory up to head_dim 128.
  auto prefill = std::make_shared<FlashAttentionPrefillSpec>();
  prefill->dtype = dt;
  prefill->cache = cache_kind;
  prefill->head_dim = *d;
  prefill->group = g;
  prefill->warps = n.attrs.int_or("warps", 4);
  prefill->tile_q = n.attrs.int_or("tile_q", 16 * prefill->warps);
  prefill->tile_kv = n.attrs.int_or("tile_kv", *d > 128 ? 32 : 64);
  const std::string kernel = n.attrs.string_or("prefill_kernel", "simple");
  const std::optional<PrefillKernel> kind = parse_prefill_kernel(kernel);
  if (!kind) {
    return ctx.unsupported(absl::StrCat("prefill_kernel \"", kernel,
                                        "\" is not a prefill kernel (simple, pipelined, hopper)"));
  }
  prefill->kernel = *kind;
  if (*kind == PrefillKernel::kHopper) {
    // Fixed by the kernel's structure: a producer warpgroup and two consumer warpgroups of 64
    // query rows (wgmma's m64) each. The KV tile is wgmma's n for S (FlashAttention-3 uses 128 x
    // 128 at head_dim 128); a third stage fits at head_dim 64 (112 KB) and hides more latency.
    prefill->warps = 12;
    prefill->tile_q = 128;
    prefill->tile_kv = n.attrs.int_or("tile_kv", 128);
    prefill->stages = n.attrs.int_or("stages", *d <= 64 ? 3 : 2);
    if (cache_kind == KvCacheKind::kFp8E4M3) {
      return ctx.unsupported(
          "the hopper prefill kernel reads a bf16/f16 KV cache (use prefill_kernel = \"pipelined\" "
          "with an fp8e4m3 cache)");
    }
    if ((*d != 64 && *d != 128) || (prefill->tile_kv != 64 && prefill->tile_kv != 128) ||
        prefill->stages < 2 || prefill->stages > 4 || n.attrs.int_or("warps", 12) != 12 ||
        n.attrs.int_or("tile_q", 128) != 128) {
      return ctx.unsupported(
          "the hopper prefill kernel needs head_dim 64 or 128, tile_kv 64 or 128, stages in [2, "
          "4] (its tile_q is 128 and warps 12)");
    }
    if (prefill->dynamic_shared_bytes() > 227 * 1024) {
      return ctx.unsupported(absl::StrCat("the hopper prefill tiles need ",
                                          prefill->dynamic_shared_bytes(),
                                          " bytes of shared memory, more than a block gets"));
    }
  } else if (*kind == PrefillKernel::kPipelined) {
    // Its K/V tiles live in dynamic shared memory, so the default Q tile is the 128 rows that
    // FlashAttention-2 uses (8 warps); the simple kernel's tile_q <= tile_kv limit does not apply.
    // At head_dim <= 64 the defaults are FlashAttention-2's 64 x 128 tiles instead (4 warps; the
    // wider KV tile amortizes the per-tile softmax over more columns). 128 x 64 spills there:
    // ptxas squeezes it into 128 registers on sm_80 (PipelinedPrefillCompilesWithoutSpills).
    prefill->warps = n.attrs.int_or("warps", *d <= 64 ? 4 : 8);
    prefill->tile_q = n.attrs.int_or("tile_q", 16 * prefill->warps);
    prefill->tile_kv = n.attrs.int_or("tile_kv", *d <= 64 ? 128 : 64);
    prefill->stages = n.attrs.int_or("stages", 2);
    if (prefill->tile_q != 16 * prefill->warps || prefill->warps < 1 || prefill->warps > 16 ||
        prefill->tile_kv % 16 != 0 || prefill->tile_kv < 16 || prefill->tile_kv > 128 ||
        prefill->stages < 2 || prefill->stages > 4) {
      return ctx.unsupported(
          "the pipelined prefill kernel needs tile_q == 16 * warps (1..16 warps), tile_kv a "
          "multiple of 16 in [16, 128], stages in [2, 4]");
    }
    // 227 KB is the most one block may opt in to (sm_90); sm_80 allows 163 KB, which the
    // defaults (102 KB at head_dim 128) stay under.
    if (prefill->dynamic_shared_bytes() > 227 * 1024) {
      return ctx.unsupported(absl::StrCat("the pipelined prefill tiles need ",
                                          prefill->dynamic_shared_bytes(),
                                          " bytes of shared memory, more than a block gets"));
    }
  } else if (prefill->tile_q != 16 * prefill->warps || prefill->tile_kv % 16 != 0 ||
             prefill->tile_q > prefill->tile_kv) {
    return ctx.unsupported("needs tile_q == 16 * warps <= tile_kv, tile_kv % 16 == 0");
  }
  // Decode knobs (split policy, tiles, pipeline depth, softmax variant): decode_config.
  absl::StatusOr<DecodeConfig> dc = decode_config(n.attrs, *d, cache_kind);
  if (!dc.ok()) return ctx.unsupported(std::string(dc.status().message()));
  const bool fixed_split = dc->split_kv > 0;
  const int64_t max_split = fixed_split ? dc->split_kv : kMaxSplitKv;
  const bool unified = dc->softmax == DecodeSoftmax::kUnifiedMax;

  // Every step: the new rows go into the cache first (here, or in the q rope's rope_kv_append
  // when this attention absorbs its ropes); the cache results are the caches in place.
  if (!ropes_absorbed_by(ctx.graph(), n)) {
    if (absl::Status s = launch_kv_append(ctx, dt, op.k, op.v, op.k_cache, op.v_cache, op.k_scales,
                                          op.v_scales, op.slot_mapping);
        !s.ok()) {
      return s;
    }
  }
  ctx.add_alias({ctx.name(op.k_cache_out), ctx.name(op.k_cache)});
  ctx.add_alias({ctx.name(op.v_cache_out), ctx.name(op.v_cache)});
  if (op.k_scales != nullptr) {
    const FlashAttentionOp fa(n);
    ctx.add_alias({ctx.name(fa.k_scales_out()), ctx.name(op.k_scales)});
    ctx.add_alias({ctx.name(fa.v_scales_out()), ctx.name(op.v_scales)});
  }

  const std::string T = dim_expr(q.shape[0]);
  auto metadata = [&] {
    return std::vector<BoundParam>{{"positions", ctx.tensor(op.positions)},
                                   {"qo_indptr", ctx.tensor(op.qo_indptr)},
                                   {"kv_page_indptr", ctx.tensor(op.kv_page_indptr)},
                                   {"kv_page_indices", ctx.tensor(op.kv_page_indices)},
                                   {"kv_last_page_len", ctx.tensor(op.kv_last_page_len)},
                                   {"num_seqs", LaunchArg::integer("S")},
                                   {"num_kv_heads", LaunchArg::integer(absl::StrCat(*hkv))},
                                   {"page_size", LaunchArg::integer(absl::StrCat(*ps))},
                                   {"scale", LaunchArg::floating(*scale)}};
  };

  // Prefill steps.
  std::vector<BoundParam> args = metadata();
  args.push_back({"out", ctx.tensor(op.out)});
  args.push_back({"q", ctx.tensor(op.q)});
  args.push_back({"k_cache", ctx.tensor(op.k_cache)});
  args.push_back({"v_cache", ctx.tensor(op.v_cache)});
  auto add_scales = [&](std::vector<BoundParam>& a) {
    if (cache_kind != KvCacheKind::kFp8E4M3) return;
    a.push_back({"k_scales", ctx.tensor(op.k_scales)});
    a.push_back({"v_scales", ctx.tensor(op.v_scales)});
  };
  add_scales(args);
  const LaunchRule prefill_rule = prefill->rule(T, *hkv);
  if (absl::Status s = ctx.launch(prefill, prefill_rule, std::move(args)); !s.ok()) return s;

  // Decode steps: split-KV partials, merged by the last split of each (sequence, KV head) in the
  // same launch. Workspaces are per node but sized alike, so the runtime may share them across
  // layers; the split counters start zeroed and every launch leaves them zeroed.
  const std::string ws = absl::StrCat("attn_partial_", ctx.node_index()),
                    wl = absl::StrCat("attn_lse_", ctx.node_index()),
                    wc = absl::StrCat("attn_split_counters_", ctx.node_index());
  ctx.add_workspace({ws, absl::StrCat(max_split, "*S*", *hq * *d * 4)});
  // The unified variant follows the log-sum-exps with the splits' weights (a second array).
  ctx.add_workspace({wl, absl::StrCat(max_split, "*S*", *hq * 4 * (unified ? 2 : 1))});
  ctx.add_workspace({wc, absl::StrCat("S*", *hkv * 4), /*zeroed=*/true});
  const std::string split =
      decode_split_expr(max_split, fixed_split, *hkv,
                        dc->split_blocks > 0 ? dc->split_blocks : kDecodeTargetBlocks);
  const std::shared_ptr<FlashAttentionDecodeSpec> decode =
      make_decode_spec(dt, cache_kind, *d, g, *dc);
  LaunchRule dr;
  dr.grid = {"S", absl::StrCat(*hkv), split};
  dr.block = {absl::StrCat(32 * decode->warps), "1", "1"};
  dr.dynamic_shared_bytes = absl::StrCat(decode->shared_bytes());
  dr.when = StepKind::kDecode;
  args = metadata();
  args.push_back({"phi", LaunchArg::floating(dc->softmax_bound)});
  args.push_back({"out", ctx.tensor(op.out)});
  args.push_back({"o_partial", LaunchArg::workspace(ws)});
  args.push_back({"lse_partial", LaunchArg::workspace(wl)});
  args.push_back({"split_counters", LaunchArg::workspace(wc)});
  args.push_back({"q", ctx.tensor(op.q)});
  args.push_back({"k_cache", ctx.tensor(op.k_cache)});
  args.push_back({"v_cache", ctx.tensor(op.v_cache)});
  add_scales(args);
  // Decode steps whose sequences share a prefix: the cascade forms beside the plain launch.
  CascadeDecodeLowering cascade{
      .dtype = dt,
      .cache = cache_kind,
      .head_dim = *d,
      .group = g,
      .q_heads = *hq,
      .kv_heads = *hkv,
      .config = *dc,
      .max_split = max_split,
      .target_blocks = dc->split_blocks > 0 ? dc->split_blocks : kDecodeTargetBlocks,
      .decode_launch = ctx.num_launches(),
      .decode_args = args};
  if (absl::Status s = ctx.launch(decode, dr, std::move(args)); !s.ok()) return s;
  return lower_cascade_decode(ctx, std::move(cascade));
}

}  // namespace kiln

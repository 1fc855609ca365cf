// Plan summaries for the CLI (see plan_summary.h).
#include "plan/plan_summary.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ir/parser.h"
#include "plan/launch_binding.h"
#include "plan/launch_expr.h"

namespace kiln {
namespace {

std::string bytes_str(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  return u == 0 ? absl::StrFormat("%.0f %s", b, units[u]) : absl::StrFormat("%.1f %s", b, units[u]);
}

// " if S>=17": the steps a bounded GEMM runs in (a GEMV launch covers the others); "" unbounded.
std::string bound_str(const StepBound& b) {
  if (b.empty()) return "";
  if (b.max == 0) return absl::StrCat(" if ", b.expr, ">=", b.min);
  if (b.min == 0) return absl::StrCat(" if ", b.expr, "<=", b.max);
  return absl::StrCat(" if ", b.min, "<=", b.expr, "<=", b.max);
}

}  // namespace

std::string plan_kernel_list(const LoadedPlan& loaded) {
  const Plan& p = loaded.plan;
  std::vector<int> uses(p.kernels.size(), 0);
  for (const PlanLaunch& l : p.launches) uses[l.kernel]++;  // indices checked at load
  std::string out =
      absl::StrFormat("%-64s %5s %8s %8s %6s\n", "kernel", "regs", "smem", "cubin", "uses");
  for (size_t i = 0; i < p.kernels.size(); ++i) {
    const PlanKernel& k = p.kernels[i];
    absl::StrAppend(
        &out, absl::StrFormat(
                  "%-64s %5d %8s %8s %6d\n", k.key, k.registers, bytes_str(k.shared_bytes),
                  k.cubin_blob < 0 ? std::string("-") : bytes_str(loaded.blob(k.cubin_blob).size()),
                  uses[i]));
  }
  return out;
}

namespace {

// What one decode step at batch 1 runs (T = S = 1, a 2k context): the launches and GEMMs whose
// step kind and bound admit it, counted by family in program order, and per layer. The runtime's
// own count is `kiln bench`'s launches_per_step.
std::string decode_step_ops(const Plan& p) {
  const LaunchSymbols step = {{"T", 1}, {"S", 1}, {"P", 128}, {"K", 2048}, {"NP", 128}};
  auto runs = [&](StepKind when, const StepBound& bound) {
    if (!launch_runs_in(when, false)) return false;
    if (bound.empty()) return true;
    absl::StatusOr<int64_t> v = eval_launch_expr(bound.expr, step);
    return v.ok() && bound_admits(bound, *v);
  };
  // Program order: launches and GEMMs by node (GEMMs run where their node does).
  // Without the persistent decode kernel (`--persistent off`): its stages, launched one by one.
  std::vector<std::pair<int64_t, std::string>> ops;
  auto key = [](int node) -> int64_t { return node < 0 ? int64_t{1} << 40 : node; };
  for (const PlanLaunch& l : p.launches) {
    const bool persistent = p.kernels[l.kernel].family == KernelFamily::kPersistentDecode;
    if (!persistent && runs(l.rule.when, l.rule.bound)) {
      ops.emplace_back(key(l.node), family_name(p.kernels[l.kernel].family));
    }
  }
  for (const PlanGemm& g : p.gemms) {
    if (runs(StepKind::kAlways, g.bound)) ops.emplace_back(key(g.node), "cuBLASLt");
  }
  for (const PlanCollective& c : p.collectives) {
    ops.emplace_back(key(c.node), absl::StrCat(collective_kind_name(c.kind), " (NCCL)"));
  }
  std::stable_sort(ops.begin(), ops.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::pair<std::string, int>> by_family;
  for (const auto& op : ops) {
    const std::string& family = op.second;  // not a structured binding: the lambda captures it
    auto it = std::find_if(by_family.begin(), by_family.end(),
                           [&](const auto& f) { return f.first == family; });
    if (it == by_family.end()) by_family.emplace_back(family, 1);
    else ++it->second;
  }
  const int64_t layers = std::max<int64_t>(1, p.model.num_layers);
  std::string out;
  if (p.persistent && runs(p.launches[p.persistent->launch].rule.when,
                           p.launches[p.persistent->launch].rule.bound)) {
    const int stages = static_cast<int>(p.persistent->stages.size());
    const int rest = static_cast<int>(ops.size()) - stages;
    absl::StrAppend(&out, absl::StrFormat("decode step (batch 1): %d launches with the persistent "
                                          "decode kernel (%d stages as tasks of one launch, %d "
                                          "other); without it (--persistent off):\n",
                                          rest + 1, stages, rest));
  }
  absl::StrAppend(&out, absl::StrFormat("decode step (batch 1): %d launches, %.1f per layer\n",
                                        ops.size(), static_cast<double>(ops.size()) / layers));
  for (const auto& [family, n] : by_family) {
    absl::StrAppend(&out, absl::StrFormat("  %4d x %s\n", n, family));
  }
  return out;
}

}  // namespace

std::string plan_summary(const LoadedPlan& loaded) {
  const Plan& p = loaded.plan;
  std::string out;
  absl::StrAppend(&out, "plan: format ", p.format_version, ", kiln ", p.kiln_version, ", ",
                  bytes_str(loaded.bytes.size()), "\n");
  absl::StrAppend(&out, "model: ", p.model.summary(), "\n");
  absl::StrAppend(&out, "  from ", p.model_path, "\n");
  absl::StrAppend(&out, "  tokenizer ", p.tokenizer_path, "\n");
  absl::StrAppend(&out, "target: ", p.arch, ", NVRTC ", p.nvrtc_version, "\n");
  absl::StrAppend(&out, "limits: ", p.limits.max_tokens, " tokens, ", p.limits.max_seqs,
                  " sequences per step, context ", p.limits.max_context, ", ",
                  dtype_name(p.limits.dtype), "\n");
  absl::StrAppend(&out, "kernels: ", p.kernels.size(), " unique, ", p.launches.size(),
                  " launches\n", plan_kernel_list(loaded));
  absl::StrAppend(&out, decode_step_ops(p));
  if (!p.cascades.empty()) {
    // Kernel names of the first cascade (every layer's are alike in a Llama plan).
    const PlanCascade& c = p.cascades.front();
    absl::StrAppend(&out, "cascade: ", p.cascades.size(),
                    " decode attentions; with a shared prefix (kiln run/bench/serve --cascade "
                    "auto) each runs ",
                    p.kernels[p.launches[c.prefix].kernel].key, " + ",
                    p.kernels[p.launches[c.suffix].kernel].key, " in place of ",
                    p.kernels[p.launches[c.decode].kernel].key, "\n");
  } else {
    absl::StrAppend(&out, "cascade: none (plain paged decode in every step)\n");
  }
  absl::StrAppend(&out, "gemms (cuBLASLt): ", p.gemms.size(), "\n");
  std::map<std::string, int> shapes;
  for (const PlanGemm& g : p.gemms) {
    shapes[absl::StrCat("M=", g.m, " N=", g.n, " K=", g.k, " ", dtype_name(g.a_dtype),
                        " epilogue=", gemm_epilogue_name(g.epilogue), bound_str(g.bound))]++;
  }
  for (const auto& [shape, n] : shapes) absl::StrAppend(&out, "  ", n, " x ", shape, "\n");
  if (p.memory) {
    absl::StrAppend(&out, "arena: ", bytes_str(p.memory->arena_bytes), " (lower bound ",
                    bytes_str(p.memory->lower_bound_bytes), ")\n");
  } else {
    absl::StrAppend(&out, "arena: not planned (plan-memory did not run)\n");
  }
  const KvLayout& kv = p.kv;
  absl::StrAppend(&out, "kv: page ", kv.page_size, " tokens, ", kv_page_layout_name(kv.layout),
                  ", ", dtype_name(kv.dtype), ", ", kv.num_layers, " layers x ", kv.num_kv_heads,
                  " heads x ", kv.head_dim,
                  kv.has_scales() ? " + an f32 scale per (slot, KV head)" : "", "; ",
                  bytes_str(kv.bytes_per_page()), " per page (all layers), ",
                  bytes_str(kv.bytes_per_token()), " per token\n");
  double wbytes = 0;
  int packed = 0, derived = 0;
  for (const PlanWeight& w : p.weights) {
    if (w.packed()) ++packed;
    if (w.derived()) ++derived;
    wbytes += w.packed() ? loaded.blob(w.blob).size() : w.size;
  }
  absl::StrAppend(&out, "weights: ", p.weights.size() - derived, " tensors, ", bytes_str(wbytes),
                  ", ", packed > 0 ? "packed in the plan" : "referenced from the checkpoint");
  if (derived > 0) {
    absl::StrAppend(&out, "; ", derived,
                    " derived (rows or columns of those, assembled at load: fuse-horizontal's "
                    "stacks, tensor-parallel ranks' slices)");
  }
  absl::StrAppend(&out, "\n");
  if (p.ranks > 1) absl::StrAppend(&out, tensor_parallel_summary(p));
  return out;
}

std::string tensor_parallel_summary(const Plan& p) {
  std::string out = absl::StrCat("tensor parallel: ", p.ranks,
                                 " ranks, one GPU each, running the same program\n");
  // Weights as each rank holds them on its GPU: the IR params in their IR dtype (the same shapes
  // on every rank), its own slices apart from the tensors every rank holds whole.
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(p.ir);
  double own = 0, whole = 0;
  if (g.ok()) {
    for (const Value* param : (*g)->params()) {
      double n = 1;  // in double: a plan's numbers are untrusted, and this only reports
      for (const Dim& d : param->type.shape)
        n *= d.is_symbolic() ? 0 : static_cast<double>(d.value);
      const double bytes = n / std::max<int64_t>(1, block_elements(param->type.dtype)) *
                           block_bytes(param->type.dtype);
      (param->sharded() ? own : whole) += bytes;
    }
  }
  absl::StrAppend(&out, "  per rank: weights ", bytes_str(own + whole), " (", bytes_str(own),
                  " its own slices, ", bytes_str(whole), " whole on every rank)");
  if (p.memory) absl::StrAppend(&out, ", arena ", bytes_str(p.memory->arena_bytes));
  absl::StrAppend(&out, ", KV ", bytes_str(p.kv.bytes_per_page()), " per page (", p.kv.num_kv_heads,
                  " of the model's ", p.model.num_kv_heads, " KV heads)\n");
  absl::StrAppend(&out, "  all ranks: weights ", bytes_str((own + whole) * p.ranks), ", KV ",
                  bytes_str(static_cast<double>(p.kv.bytes_per_page()) * p.ranks), " per page\n");
  std::map<std::string, int> kinds;
  for (const PlanCollective& c : p.collectives) {
    kinds[absl::StrCat(collective_kind_name(c.kind), " ", dtype_name(c.dtype), " of ", c.outer,
                       " x ", c.inner)]++;
  }
  for (const auto& [what, n] : kinds) absl::StrAppend(&out, "  ", n, " x ", what, " per step\n");
  return out;
}

absl::StatusOr<std::string> plan_kernel_source(const LoadedPlan& loaded, const std::string& key,
                                               bool ptx) {
  const int k = loaded.plan.find_kernel(key);
  if (k < 0) {
    return absl::NotFoundError(
        absl::StrCat("no kernel named ", key, " in this plan (list them with --kernels)"));
  }
  const PlanKernel& kernel = loaded.plan.kernels[k];
  const int blob = ptx ? kernel.ptx_blob : kernel.source_blob;
  if (blob < 0) {
    return absl::NotFoundError(absl::StrCat("kernel ", key, " has no ", ptx ? "PTX" : "source",
                                            " in this plan (it was built without NVRTC)"));
  }
  return std::string(loaded.blob(blob));
}

}  // namespace kiln

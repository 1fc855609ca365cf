// plan-kv: the paged KV cache's layout, read off the graph's cache inputs.
#include <string>
#include <unordered_set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/ops.h"
#include "passes/pass.h"
#include "passes/pass_registry.h"

namespace kiln {
namespace {

/// Derives the KvLayout (page size, NHD layout, dtype, heads, head_dim, layers; its byte counts
/// come from plan/kv_layout.cc) from the graph's KV cache inputs [NP, page_size, kv_heads,
/// head_dim], which every layer must share. An fp8e4m3 cache's scale arrays (type inference
/// checks that every op on it takes them) are counted in its bytes per page. Runs last; the
/// runtime sizes its page pool from the plan and a memory budget.
class PlanKv : public Pass {
 public:
  std::string name() const override { return "plan-kv"; }
  std::string description() const override {
    return "KV cache layout: page size, layout, dtype, bytes per page and per token";
  }

  absl::StatusOr<bool> run(Graph& graph, PassContext& context) override {
    std::vector<const Value*> caches;  // in order of first use
    std::unordered_set<const Value*> seen;
    auto note = [&](const Value* v) {
      if (v->kind == ValueKind::kInput && seen.insert(v).second) caches.push_back(v);
    };
    for (const auto& n : graph.nodes()) {
      if (auto w = op_view<KvWriteOp>(n.get())) note(w->cache());
      if (auto qk = op_view<PagedQkOp>(n.get())) note(qk->k_cache());
      if (auto pv = op_view<PagedPvOp>(n.get())) note(pv->v_cache());
      if (auto attn = op_view<FlashAttentionOp>(n.get())) {
        note(attn->k_cache());
        note(attn->v_cache());
      }
    }
    context.count(name(), "caches", static_cast<int64_t>(caches.size()));
    if (caches.empty()) return false;
    const Type& t = caches[0]->type;
    for (const Value* c : caches) {
      if (!(c->type == t)) {
        return absl::InvalidArgumentError(absl::StrCat("KV caches differ: %", caches[0]->name,
                                                       " is ", t.to_string(), " but %", c->name,
                                                       " is ", c->type.to_string()));
      }
    }
    if (t.rank() != 4 || t.shape[1].is_symbolic() || t.shape[2].is_symbolic() ||
        t.shape[3].is_symbolic()) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV cache %", caches[0]->name, " is ", t.to_string(),
                       ", expected [pages, page_size, kv_heads, head_dim] with constant sizes"));
    }
    KvLayout kv;
    kv.page_size = static_cast<int32_t>(t.shape[1].value);
    kv.layout = KvPageLayout::kNHD;
    kv.dtype = t.dtype;
    kv.num_layers = static_cast<int32_t>(caches.size() / 2);
    kv.num_kv_heads = static_cast<int32_t>(t.shape[2].value);
    kv.head_dim = static_cast<int32_t>(t.shape[3].value);
    context.count(name(), "bytes_per_page_per_layer", kv.bytes_per_page_per_layer());
    if (kv.has_scales()) {
      context.count(name(), "scale_bytes_per_page_per_layer", 2 * kv.scale_bytes_per_page());
    }
    context.count(name(), "bytes_per_page", kv.bytes_per_page());
    context.count(name(), "bytes_per_token", kv.bytes_per_token());
    context.kv_layout = kv;
    return false;
  }
};

}  // namespace

std::unique_ptr<Pass> make_plan_kv_pass() { return std::make_unique<PlanKv>(); }

}  // namespace kiln

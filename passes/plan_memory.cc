// plan-memory: arena offsets for every intermediate value, from liveness intervals and greedy
// packing at the symbols' upper bounds.
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/ops.h"
#include "ir/printer.h"
#include "passes/pass.h"
#include "passes/pass_registry.h"

namespace kiln {
namespace {

int64_t align_up(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

// Results that are the KV cache updated in place: they live in the page pool, not the arena.
bool aliases_cache(const Node& n, int output) {
  return (n.op == OpKind::kKvWrite && output == 0) ||
         (n.op == OpKind::kFlashAttention && FlashAttentionOp::result_aliases_cache(output));
}

/// Plans the activation arena: every node result gets a byte range sized for the symbols' upper
/// bounds (max_elements x dtype size, 256-byte aligned). A reshape shares its input's bytes (it
/// is a view of contiguous data), so its readers extend the source's live range; results that
/// are a KV cache updated in place, graph inputs and params are not in the arena. Buffers whose
/// live ranges [definition, last read] overlap never overlap in bytes; placement is greedy
/// first-fit in decreasing size. Runs last but one, after every fusion, so that fused
/// intermediates (e.g. attention scores [T, H, K]) no longer take space. Reports the arena
/// beside the max-live lower bound.
class PlanMemory : public Pass {
 public:
  std::string name() const override { return "plan-memory"; }
  std::string description() const override {
    return "activation arena: liveness intervals + greedy first-fit packing";
  }

  absl::StatusOr<bool> run(Graph& graph, PassContext& context) override {
    MemoryPlan plan;
    const ValueNames names(graph);
    // Buffer groups: a root value with its views.
    struct Group {
      const Value* root;
      std::vector<const Value*> views;
      int64_t size = 0;
      int first = 0, last = 0;
      int64_t offset = 0;
    };
    std::vector<Group> groups;
    std::map<const Value*, int> group_of;  // value -> index in groups (arena values only)
    const int end = graph.num_nodes();
    for (int i = 0; i < end; ++i) {
      const Node& n = *graph.nodes()[i];
      for (int o = 0; o < static_cast<int>(n.outputs.size()); ++o) {
        const Value* v = n.outputs[o];
        if (aliases_cache(n, o)) continue;
        if (n.op == OpKind::kReshape) {
          auto it = group_of.find(n.inputs[0]);
          if (it == group_of.end()) continue;  // a view of an input or param
          group_of[v] = it->second;
          groups[it->second].views.push_back(v);
          continue;
        }
        absl::StatusOr<int64_t> elements = graph.symbols().max_elements(v->type.shape);
        if (!elements.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat(names(v), ": ", elements.status().message()));
        }
        const int64_t bytes =
            (*elements * block_bytes(v->type.dtype) + block_elements(v->type.dtype) - 1) /
            block_elements(v->type.dtype);
        group_of[v] = static_cast<int>(groups.size());
        groups.push_back({v, {}, align_up(std::max<int64_t>(bytes, 1), plan.alignment), i, i, 0});
      }
      for (const Value* in : n.inputs) {
        auto it = group_of.find(in);
        if (it != group_of.end()) groups[it->second].last = std::max(groups[it->second].last, i);
      }
    }
    for (const GraphOutput& o : graph.outputs()) {
      auto it = group_of.find(o.value);
      if (it != group_of.end()) groups[it->second].last = end;
    }

    // Lower bound: the most bytes live at one program point.
    std::vector<int64_t> live(end + 1, 0);
    for (const Group& g : groups) {
      for (int t = g.first; t <= g.last; ++t) live[t] += g.size;
    }
    plan.lower_bound_bytes = live.empty() ? 0 : *std::max_element(live.begin(), live.end());

    // Greedy first fit, largest first: big buffers pack tightly and small ones fill the gaps.
    std::vector<int> order(groups.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      if (groups[a].size != groups[b].size) return groups[a].size > groups[b].size;
      return groups[a].first < groups[b].first;
    });
    std::vector<int> placed;
    for (int gi : order) {
      Group& g = groups[gi];
      std::vector<std::pair<int64_t, int64_t>> busy;  // [offset, end) of time-overlapping buffers
      for (int pi : placed) {
        const Group& p = groups[pi];
        if (p.first <= g.last && g.first <= p.last) busy.emplace_back(p.offset, p.offset + p.size);
      }
      std::sort(busy.begin(), busy.end());
      int64_t offset = 0;
      for (const auto& [lo, hi] : busy) {
        if (offset + g.size <= lo) break;
        offset = std::max(offset, hi);
      }
      g.offset = offset;
      plan.arena_bytes = std::max(plan.arena_bytes, offset + g.size);
      placed.push_back(gi);
    }

    for (const Group& g : groups) {
      plan.buffers.push_back({names(g.root), g.offset, g.size, g.first, g.last, ""});
      for (const Value* v : g.views) {
        plan.buffers.push_back({names(v), g.offset, g.size, g.first, g.last, names(g.root)});
      }
    }
    context.count(name(), "buffers", static_cast<int64_t>(groups.size()));
    context.count(name(), "arena_bytes", plan.arena_bytes);
    context.count(name(), "lower_bound_bytes", plan.lower_bound_bytes);
    context.memory_plan = std::move(plan);
    return false;
  }
};

}  // namespace

std::unique_ptr<Pass> make_plan_memory_pass() { return std::make_unique<PlanMemory>(); }

}  // namespace kiln

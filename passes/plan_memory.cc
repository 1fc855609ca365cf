// plan-memory: arena offsets for every intermediate value, from liveness intervals and greedy
// packing at the symbols' upper bounds.
#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/checked_arithmetic.h"
#include "ir/printer.h"
#include "passes/pass.h"
#include "passes/pass_registry.h"

namespace kiln {
namespace {

// Byte counts at the symbols' upper bounds can exceed int64 for hostile IR (a dim of 2^40 times
// another of 2^40): every size, offset and sum below is checked, and a plan that does not fit is
// refused rather than wrapped around into a small arena.
absl::Status too_large(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(what,
                   " needs 2^63 bytes or more at the symbols' upper bounds; lower the "
                   "bounds (max tokens, sequences, context) or the sizes"));
}

// Bytes of `elements` values of `dtype` (whole blocks for block-quantized types).
std::optional<int64_t> buffer_bytes(int64_t elements, DType dtype) {
  const int64_t per_block = block_elements(dtype);
  std::optional<int64_t> blocks = checked_add(elements, per_block - 1);
  if (!blocks) return std::nullopt;
  return checked_mul(*blocks / per_block, block_bytes(dtype));
}

// Results that are the KV cache updated in place: they live in the page pool, not the arena.
bool aliases_cache(const Node& n, int output) {
  return (n.op == OpKind::kKvWrite && output == 0) ||
         (n.op == OpKind::kFlashAttention && output >= 1);
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
        std::optional<int64_t> bytes = buffer_bytes(*elements, v->type.dtype);
        if (bytes) bytes = checked_align_up(std::max<int64_t>(*bytes, 1), plan.alignment);
        if (!bytes) return too_large(absl::StrCat(names(v), " (", v->type.to_string(), ")"));
        group_of[v] = static_cast<int>(groups.size());
        groups.push_back({v, {}, *bytes, i, i, 0});
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
      for (int t = g.first; t <= g.last; ++t) {
        std::optional<int64_t> sum = checked_add(live[t], g.size);
        if (!sum) return too_large(absl::StrCat("the values live at node ", t));
        live[t] = *sum;
      }
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
        // p.offset + p.size was checked when p was placed.
        if (p.first <= g.last && g.first <= p.last) busy.emplace_back(p.offset, p.offset + p.size);
      }
      std::sort(busy.begin(), busy.end());
      int64_t offset = 0;
      for (const auto& [lo, hi] : busy) {
        if (g.size <= lo - offset) break;  // both non-negative: the difference cannot overflow
        offset = std::max(offset, hi);
      }
      // Every placed end fits (checked when placed), and the live sum bounded above covers g.
      std::optional<int64_t> end_bytes = checked_add(offset, g.size);
      if (!end_bytes) return too_large("the activation arena");
      g.offset = offset;
      plan.arena_bytes = std::max(plan.arena_bytes, *end_bytes);
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

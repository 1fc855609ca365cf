// plan-memory: arena offsets for every intermediate value, from liveness intervals and greedy
// packing at the symbols' upper bounds.
#include <algorithm>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/checked_arithmetic.h"
#include "ir/ops.h"
#include "ir/printer.h"
#include "ir/view.h"
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

/// Live intervals [first, last] over program points 0..end, answering "which of the intervals
/// added so far overlap [a, b]?" in O(log end + (b - a) + answers): an interval overlaps [a, b]
/// when it starts inside it (found through per-point start lists) or contains a while starting
/// before it (a stabbing query on a segment tree over the points). This keeps first-fit placement
/// near-linear where a scan of every placed buffer per buffer was quadratic in the graph.
class IntervalIndex {
 public:
  explicit IntervalIndex(int end) : starts_(end + 1) {
    while (leaves_ < end + 1) leaves_ *= 2;
    cover_.resize(2 * leaves_);
  }

  void add(int id, int first, int last) {
    starts_[first].push_back(id);
    for (int l = first + leaves_, r = last + leaves_ + 1; l < r; l /= 2, r /= 2) {
      if (l & 1) cover_[l++].push_back(id);
      if (r & 1) cover_[--r].push_back(id);
    }
  }

  /// Calls `f(id)` once for every added interval that overlaps [a, b]; `first_of(id)` is its
  /// first point.
  template <class F, class First>
  void overlapping(int a, int b, First first_of, F f) const {
    for (int t = a; t <= b; ++t) {
      for (int id : starts_[t]) f(id);
    }
    for (int i = a + leaves_; i >= 1; i /= 2) {
      for (int id : cover_[i]) {
        if (first_of(id) < a) f(id);
      }
    }
  }

 private:
  int leaves_ = 1;
  std::vector<std::vector<int>> starts_;  // interval ids by first point
  std::vector<std::vector<int>> cover_;   // segment tree: ids whose interval covers the node
};

// Results that are the KV cache (or its scale array) updated in place: they live in the page
// pool, not the arena.
bool aliases_cache(const Node& n, int output) {
  return n.op == OpKind::kKvWrite ||
         (n.op == OpKind::kFlashAttention && FlashAttentionOp::result_aliases_cache(output));
}

/// Plans the activation arena: every node result gets a byte range sized for the symbols' upper
/// bounds (max_elements x dtype size, 256-byte aligned). A reshape shares its input's bytes (it
/// is a view of contiguous data), so its readers extend the source's live range; results that
/// are a KV cache updated in place, graph inputs and params are not in the arena. Buffers whose
/// live ranges [definition, last read] overlap never overlap in bytes (a result computed only from
/// views of one value is defined where that value is); placement is greedy
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
      std::vector<std::pair<const Value*, int64_t>> views;  // with their byte offsets
      int64_t size = 0;
      int first = 0, last = 0;
      int64_t offset = 0;
    };
    std::vector<Group> groups;
    std::unordered_map<const Value*, int> group_of;  // value -> index in groups (arena only)
    const int end = graph.num_nodes();
    const auto& nodes = graph.nodes();
    for (int i = 0; i < end; ++i) {
      const Node& n = *nodes[i];
      for (int o = 0; o < static_cast<int>(n.outputs.size()); ++o) {
        const Value* v = n.outputs[o];
        if (aliases_cache(n, o)) continue;
        if (n.op == OpKind::kReshape || n.op == OpKind::kSlice) {
          // A view (ir/view.h) sits inside its base's bytes, `offset` elements in.
          std::optional<StridedRows> view = strided_rows(*v);
          auto it = view ? group_of.find(view->base) : group_of.end();
          if (n.op == OpKind::kReshape && it == group_of.end()) continue;  // of an input or param
          if (it != group_of.end()) {
            group_of[v] = it->second;
            groups[it->second].views.push_back({v, view->offset * block_bytes(v->type.dtype)});
            continue;
          }
          // A slice no view describes (or of an input): a buffer of its own, as the reference
          // backend's copy.
        }
        absl::StatusOr<int64_t> elements = graph.symbols().max_elements(v->type.shape);
        if (!elements.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat(names(v), ": ", elements.status().message()));
        }
        std::optional<int64_t> bytes = buffer_bytes(*elements, v->type.dtype);
        if (bytes) bytes = checked_align_up(std::max<int64_t>(*bytes, 1), plan.alignment);
        if (!bytes) return too_large(absl::StrCat(names(v), " (", v->type.to_string(), ")"));
        // A node that reads only views of one value may be computed inside that value's
        // producing launch (the GEMV's SwiGLU epilogue writes silu(gate)·up while it still reads
        // the GEMM's input, codegen/families/gemv.h), so its result is live from there on.
        int first = i;
        if (!n.inputs.empty()) {
          auto g0 = group_of.find(n.inputs[0]);
          bool all_views = g0 != group_of.end();
          for (const Value* in : n.inputs) {
            auto it = group_of.find(in);
            all_views = all_views && it != group_of.end() && it->second == g0->second &&
                        groups[it->second].root != in;
          }
          if (all_views) first = groups[g0->second].first;
        }
        group_of[v] = static_cast<int>(groups.size());
        groups.push_back({v, {}, *bytes, first, i, 0});
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

    // Lower bound: the most bytes live at one program point (a difference array over points).
    std::vector<int64_t> delta(end + 2, 0);
    for (const Group& g : groups) {
      std::optional<int64_t> up = checked_add(delta[g.first], g.size);
      if (!up) return too_large(absl::StrCat("the values live at node ", g.first));
      delta[g.first] = *up;
      std::optional<int64_t> down = checked_add(delta[g.last + 1], -g.size);
      if (!down) return too_large(absl::StrCat("the values live at node ", g.last));
      delta[g.last + 1] = *down;
    }
    int64_t live = 0;
    for (int t = 0; t <= end; ++t) {
      std::optional<int64_t> sum = checked_add(live, delta[t]);
      if (!sum) return too_large(absl::StrCat("the values live at node ", t));
      live = *sum;
      plan.lower_bound_bytes = std::max(plan.lower_bound_bytes, live);
    }

    // Greedy first fit, largest first: big buffers pack tightly and small ones fill the gaps.
    std::vector<int> order(groups.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      if (groups[a].size != groups[b].size) return groups[a].size > groups[b].size;
      return groups[a].first < groups[b].first;
    });
    IntervalIndex placed(end);
    std::vector<std::pair<int64_t, int64_t>> busy;  // [offset, end) of time-overlapping buffers
    for (int gi : order) {
      Group& g = groups[gi];
      busy.clear();
      placed.overlapping(
          g.first, g.last, [&](int pi) { return groups[pi].first; },
          [&](int pi) {
            busy.emplace_back(groups[pi].offset, groups[pi].offset + groups[pi].size);
          });
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
      placed.add(gi, g.first, g.last);
    }

    for (const Group& g : groups) {
      plan.buffers.push_back({names(g.root), g.offset, g.size, g.first, g.last, ""});
      for (const auto& [v, at] : g.views) {
        plan.buffers.push_back(
            {names(v), g.offset + at, g.size - at, g.first, g.last, names(g.root)});
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

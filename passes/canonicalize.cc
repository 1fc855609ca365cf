// canonicalize: cheap cleanups that make the fusion patterns uniform (dead code, duplicate
// constants and rope tables).
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "ir/attributes.h"
#include "passes/pass.h"
#include "passes/pass_registry.h"

namespace kiln {
namespace {

/// Removes dead nodes and merges duplicate source nodes (`constant`, `rope_table`) with equal
/// attributes and type into the first one. Runs first in the pipeline so that the fusions see one
/// eps/scale constant and one cos/sin table, and again implicitly through the fusions' own dead
/// code removal. Source nodes have no inputs, so the first copy dominates every later reader.
class Canonicalize : public Pass {
 public:
  std::string name() const override { return "canonicalize"; }
  std::string description() const override {
    return "remove dead nodes; merge duplicate constants and rope tables";
  }

  absl::StatusOr<bool> run(Graph& graph, PassContext& context) override {
    std::map<std::string, Value*> first;  // key: op, type and attributes
    int merged = 0;
    for (const auto& n : graph.nodes()) {
      if (n->op != OpKind::kConstant && n->op != OpKind::kRopeTable) continue;
      std::string key = absl::StrCat(op_name(n->op), " ", n->output()->type.to_string());
      for (const auto& [attr, value] : n->attrs.all()) {
        absl::StrAppend(&key, " ", attr, "=", attribute_to_string(value));
      }
      auto [it, inserted] = first.emplace(key, n->output());
      if (!inserted) {
        graph.replace_all_uses(n->output(), it->second);
        ++merged;
      }
    }
    const int removed = graph.remove_dead_nodes();
    if (merged > 0) context.count(name(), "merged", merged);
    if (removed > 0) context.count(name(), "removed", removed);
    return merged > 0 || removed > 0;
  }
};

}  // namespace

std::unique_ptr<Pass> make_canonicalize_pass() { return std::make_unique<Canonicalize>(); }

}  // namespace kiln

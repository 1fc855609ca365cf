// The kernel families' lowerings by op. Adding a family: a new codegen/families/<family>.{h,cc}
// pair (spec + lowering) and one line in registry.cc.
#pragma once

#include <vector>

#include "codegen/families/family.h"

namespace kiln {

struct FamilyLowering {
  const char* name;         // for messages: "rmsnorm_residual"
  std::vector<OpKind> ops;  // the ops it lowers
  absl::Status (*lower)(const Node& node, LoweringContext& ctx);
};

/// Every family lowering, in registry order.
const std::vector<FamilyLowering>& family_lowerings();
/// The lowering of `op`, or null when no family lowers it.
const FamilyLowering* find_family_lowering(OpKind op);

}  // namespace kiln

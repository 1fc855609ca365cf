// Plan look-ups (see plan.h).
#include "plan/plan.h"

namespace kiln {

int Plan::find_kernel(std::string_view key) const {
  for (size_t i = 0; i < kernels.size(); ++i) {
    if (kernels[i].key == key) return static_cast<int>(i);
  }
  return -1;
}

const PlanWeight* Plan::find_weight(std::string_view name, int rank) const {
  for (const PlanWeight& w : weights) {
    if (w.name == name && (w.rank == -1 || w.rank == rank)) return &w;
  }
  return nullptr;
}

}  // namespace kiln

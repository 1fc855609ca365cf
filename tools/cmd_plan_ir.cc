// `kiln ir <plan.kplan>`: the plan's final IR, its kernel list (--kernels) or one kernel's
// generated source (--source NAME) / PTX (--ptx NAME).
#include <iostream>

#include "plan/plan_file.h"
#include "plan/plan_summary.h"
#include "tools/commands.h"

namespace kiln::tools {

int run_plan_ir(const PlanIrOptions& o) {
  PlanLoadOptions opts;
  opts.weights = WeightCheck::kNone;
  absl::StatusOr<LoadedPlan> plan = read_plan(o.plan, opts);
  if (!plan.ok()) {
    std::cerr << "kiln ir: " << plan.status().message() << "\n";
    return 1;
  }
  if (!o.source.empty() || !o.ptx.empty()) {
    absl::StatusOr<std::string> text =
        plan_kernel_source(*plan, o.source.empty() ? o.ptx : o.source, !o.ptx.empty());
    if (!text.ok()) {
      std::cerr << "kiln ir: " << text.status().message() << "\n";
      return 1;
    }
    std::cout << *text;
    return 0;
  }
  if (o.kernels) {
    std::cout << plan_kernel_list(*plan);
    return 0;
  }
  std::cout << plan->plan.ir;
  return 0;
}

}  // namespace kiln::tools

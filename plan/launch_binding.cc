// Launch argument binding (see launch_binding.h).
#include "plan/launch_binding.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "plan/plan_json.h"

namespace kiln {

absl::StatusOr<std::vector<BoundArg>> bind_launch(const PlanKernel& kernel,
                                                  const PlanLaunch& launch,
                                                  const LaunchSymbols& symbols,
                                                  LaunchResolver& resolver) {
  if (launch.args.size() != kernel.params.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kernel.key, ": the launch passes ", launch.args.size(),
                     " arguments, the entry takes ", kernel.params.size()));
  }
  std::vector<BoundArg> out;
  out.reserve(launch.args.size());
  for (size_t i = 0; i < launch.args.size(); ++i) {
    const LaunchArg& arg = launch.args[i];
    const EntryParam& param = kernel.params[i];
    auto mismatch = [&] {
      return absl::InvalidArgumentError(
          absl::StrCat(kernel.key, ": parameter ", param.name, " (", param_type_name(param.type),
                       ") is bound to an argument of kind ", launch_arg_kind_name(arg.kind)));
    };
    auto context = [&](const absl::Status& s) {
      return absl::Status(s.code(),
                          absl::StrCat(kernel.key, ": parameter ", param.name, ": ", s.message()));
    };
    BoundArg b;
    b.type = param.type;
    switch (arg.kind) {
      case LaunchArg::Kind::kTensor:
      case LaunchArg::Kind::kWorkspace:
      case LaunchArg::Kind::kRuntime: {
        if (param.type != ParamType::kPointer) return mismatch();
        absl::StatusOr<uint64_t> p =
            arg.kind == LaunchArg::Kind::kTensor      ? resolver.tensor(arg.value)
            : arg.kind == LaunchArg::Kind::kWorkspace ? resolver.workspace(arg.value)
                                                      : resolver.runtime(arg.runtime);
        if (!p.ok()) return context(p.status());
        b.pointer = *p;
        break;
      }
      case LaunchArg::Kind::kInt: {
        if (param.type != ParamType::kI32 && param.type != ParamType::kI64) return mismatch();
        absl::StatusOr<int64_t> v = eval_launch_expr(arg.expr, symbols);
        if (!v.ok()) return context(v.status());
        if (param.type == ParamType::kI32 && (*v < std::numeric_limits<int32_t>::min() ||
                                              *v > std::numeric_limits<int32_t>::max())) {
          return context(absl::OutOfRangeError(
              absl::StrCat("\"", arg.expr, "\" = ", *v, " does not fit an int")));
        }
        b.integer = *v;
        break;
      }
      case LaunchArg::Kind::kFloat:
        if (param.type != ParamType::kF32) return mismatch();
        b.real = static_cast<float>(arg.real);
        break;
    }
    out.push_back(b);
  }
  return out;
}

bool launch_runs_in(StepKind when, bool prefill_step) {
  switch (when) {
    case StepKind::kAlways: return true;
    case StepKind::kPrefill: return prefill_step;
    case StepKind::kDecode: return !prefill_step;
    case StepKind::kCascade: return false;  // only where a runtime runs cascade steps
  }
  return true;
}

bool bound_admits(const StepBound& bound, int64_t value) {
  if (bound.empty()) return true;
  if (bound.min > 0 && value < bound.min) return false;
  if (bound.max > 0 && value > bound.max) return false;
  return true;
}

}  // namespace kiln

// Binding one launch's arguments: the plan's LaunchArgs, typed by the kernel's EntryParam list,
// resolved against a step (device addresses of values, workspaces and runtime inputs; symbol
// values for the integer expressions). Every executor of a plan's kernels binds through this —
// the CUDA backend, the GPU kernel tests — so the argument packing rule exists once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "plan/launch_expr.h"
#include "plan/plan.h"

namespace kiln {

/// One argument value as the kernel entry receives it: `type` says which field holds it.
struct BoundArg {
  ParamType type = ParamType::kPointer;
  uint64_t pointer = 0;  ///< kPointer: a device address
  int64_t integer = 0;   ///< kI32 (range-checked) and kI64
  float real = 0;        ///< kF32
};

/// Where a step's buffers are. Each call returns a device address or an error naming what is
/// missing.
class LaunchResolver {
 public:
  virtual ~LaunchResolver() = default;
  /// The buffer holding IR value `value` ("%12", "@embed", an input's "%tokens").
  virtual absl::StatusOr<uint64_t> tensor(const std::string& value) = 0;
  /// The scratch buffer named by a PlanWorkspace.
  virtual absl::StatusOr<uint64_t> workspace(const std::string& name) = 0;
  /// A runtime-supplied per-sequence buffer (sampling inputs and output).
  virtual absl::StatusOr<uint64_t> runtime(RuntimeInput input) = 0;
};

/// The arguments of `launch` of `kernel`, in entry order. Errors (argument count, a kind that
/// does not fit the parameter's type, an i32 parameter whose value does not fit, an unbound
/// symbol) name the kernel and the parameter.
absl::StatusOr<std::vector<BoundArg>> bind_launch(const PlanKernel& kernel,
                                                  const PlanLaunch& launch,
                                                  const LaunchSymbols& symbols,
                                                  LaunchResolver& resolver);

/// Whether a launch with rule `when` runs in a step: prefill steps have some sequence with more
/// than one query token, decode steps have exactly one per sequence. False for kCascade launches:
/// they run only where a runtime chooses a cascade step (PlanCascade).
bool launch_runs_in(StepKind when, bool prefill_step);

/// Whether a StepBound admits a step whose bound expression evaluates to `value` (an empty
/// bound admits every step).
bool bound_admits(const StepBound& bound, int64_t value);

}  // namespace kiln

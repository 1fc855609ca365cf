// The static pass registry: command-line names ("fuse-attention") to pass factories, and the
// default pipeline as a plain list of those names.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "passes/pass.h"

namespace kiln {

using PassFactory = std::function<std::unique_ptr<Pass>()>;

/// One registered pass: its command-line name, its one-line description and its factory.
struct RegisteredPass {
  std::string name;
  std::string description;
  PassFactory create;
};

/// Every registered pass in registration order (kiln's own passes first, in pipeline order).
const std::vector<RegisteredPass>& registered_passes();

/// Adds a pass (tests, experiments); AlreadyExists if the name is taken.
absl::Status register_pass(PassFactory factory);

/// A fresh instance of the named pass; InvalidArgument naming the registered passes otherwise.
absl::StatusOr<std::unique_ptr<Pass>> create_pass(std::string_view name);

/// canonicalize → shard-tensor-parallel → fuse-horizontal → fuse-rope → fuse-rmsnorm-residual →
/// fuse-attention → fuse-elementwise → gemm-epilogue → plan-memory → plan-kv (DESIGN.md: passes/).
const std::vector<std::string>& default_pipeline();

// Factories of kiln's passes, one per file of passes/.
std::unique_ptr<Pass> make_canonicalize_pass();
std::unique_ptr<Pass> make_shard_tensor_parallel_pass();
std::unique_ptr<Pass> make_fuse_rope_pass();
std::unique_ptr<Pass> make_fuse_rmsnorm_residual_pass();
std::unique_ptr<Pass> make_fuse_attention_pass();
std::unique_ptr<Pass> make_fuse_elementwise_pass();
std::unique_ptr<Pass> make_fuse_horizontal_pass();
std::unique_ptr<Pass> make_gemm_epilogue_pass();
std::unique_ptr<Pass> make_plan_memory_pass();
std::unique_ptr<Pass> make_plan_kv_pass();

}  // namespace kiln

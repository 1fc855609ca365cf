// The static pass registry (see pass_registry.h). Built-in passes are listed explicitly rather
// than self-registered from static initializers, which a static library's linker may drop.
#include "passes/pass_registry.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kiln {
namespace {

std::vector<RegisteredPass>& registry() {
  static std::vector<RegisteredPass>* passes = [] {
    auto* out = new std::vector<RegisteredPass>;
    for (PassFactory f :
         {PassFactory(make_canonicalize_pass), PassFactory(make_shard_tensor_parallel_pass),
          PassFactory(make_fuse_rope_pass), PassFactory(make_fuse_rmsnorm_residual_pass),
          PassFactory(make_fuse_attention_pass), PassFactory(make_fuse_elementwise_pass),
          PassFactory(make_fuse_horizontal_pass), PassFactory(make_gemm_epilogue_pass),
          PassFactory(make_plan_memory_pass), PassFactory(make_plan_kv_pass)}) {
      std::unique_ptr<Pass> p = f();
      out->push_back({p->name(), p->description(), f});
    }
    return out;
  }();
  return *passes;
}

}  // namespace

const std::vector<RegisteredPass>& registered_passes() { return registry(); }

absl::Status register_pass(PassFactory factory) {
  std::unique_ptr<Pass> p = factory();
  for (const RegisteredPass& r : registry()) {
    if (r.name == p->name()) {
      return absl::AlreadyExistsError(absl::StrCat("pass ", p->name(), " is already registered"));
    }
  }
  registry().push_back({p->name(), p->description(), std::move(factory)});
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Pass>> create_pass(std::string_view name) {
  for (const RegisteredPass& r : registry()) {
    if (r.name == name) return r.create();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown pass \"", std::string(name), "\"; registered passes: ",
      absl::StrJoin(registry(), ", ",
                    [](std::string* out, const RegisteredPass& r) { out->append(r.name); })));
}

const std::vector<std::string>& default_pipeline() {
  static const std::vector<std::string> pipeline = {
      "canonicalize",     "shard-tensor-parallel", "fuse-horizontal",
      "fuse-rope",        "fuse-rmsnorm-residual", "fuse-attention",
      "fuse-elementwise", "gemm-epilogue",         "plan-memory",
      "plan-kv"};
  return pipeline;
}

}  // namespace kiln

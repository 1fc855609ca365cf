// The registry of family lowerings (see registry.h).
#include "codegen/families/registry.h"

#include "codegen/families/attention.h"
#include "codegen/families/embedding.h"
#include "codegen/families/fused_elementwise.h"
#include "codegen/families/rmsnorm_residual.h"
#include "codegen/families/rope.h"

namespace kiln {

const std::vector<FamilyLowering>& family_lowerings() {
  static const std::vector<FamilyLowering> all = {
      {"flash_attention", {OpKind::kFlashAttention}, lower_flash_attention},
      {"rmsnorm_residual", {OpKind::kRmsNorm, OpKind::kRmsNormResidual}, lower_rmsnorm},
      {"rope", {OpKind::kRope}, lower_rope},
      {"embedding", {OpKind::kGather, OpKind::kLastTokenRows}, lower_gather_rows},
      {"fused_elementwise",
       {OpKind::kFusedElementwise, OpKind::kAdd, OpKind::kSub, OpKind::kMul, OpKind::kDiv,
        OpKind::kNeg, OpKind::kExp, OpKind::kRsqrt, OpKind::kSilu, OpKind::kCast},
       lower_elementwise},
  };
  return all;
}

const FamilyLowering* find_family_lowering(OpKind op) {
  for (const FamilyLowering& f : family_lowerings()) {
    for (OpKind o : f.ops) {
      if (o == op) return &f;
    }
  }
  return nullptr;
}

}  // namespace kiln

// fuse-rmsnorm-residual: the RMSNorm arithmetic (with the residual add before it) into one
// rmsnorm_residual or rmsnorm node.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/ops.h"
#include "passes/pass.h"
#include "passes/pass_registry.h"
#include "passes/rewrite.h"

namespace kiln {
namespace {

/// One RMSNorm as models/ emits it, anchored on its rsqrt:
///   sq = mul(x, x); ms = reduce_mean(sq); a = add(ms, eps); r = rsqrt(a); n = mul(x, r);
///   y = mul(n, w)                          (operands of add/mul in either order)
/// plus, when x = add(p, q) of two equal types, that residual add.
struct RmsNormMatch {
  Node *square, *mean, *add_eps, *rsqrt, *normalize, *scale;
  Value* x;
  Value* w;
  double eps;
  Node* residual_add = nullptr;
};

struct RmsNormPattern {
  static MatchResult<RmsNormMatch> match(const Graph& g, Node* rsqrt) {
    using R = MatchResult<RmsNormMatch>;
    RmsNormMatch m{};
    m.rsqrt = rsqrt;
    m.add_eps = producer_of(rsqrt->inputs[0], OpKind::kAdd);
    if (m.add_eps == nullptr) return R::fail("rsqrt does not read mean + eps");
    Value* mean_value = nullptr;
    for (int i = 0; i < 2 && mean_value == nullptr; ++i) {
      if (producer_of(m.add_eps->inputs[i], OpKind::kReduceMean) != nullptr) {
        mean_value = m.add_eps->inputs[i];
      }
    }
    if (mean_value == nullptr) return R::fail("rsqrt does not read reduce_mean(x * x) + eps");
    m.mean = mean_value->producer;
    Value* eps_value = other_operand(m.add_eps, mean_value);
    const Value* source = eps_value;  // through reshapes, to tell a reshaped constant apart
    while (Node* view = producer_of(source, OpKind::kReshape)) source = view->inputs[0];
    if (producer_of(source, OpKind::kConstant) == nullptr) return R::fail("eps is not a constant");
    std::optional<double> eps = scalar_constant(eps_value);
    if (!eps) {
      return R::fail(
          absl::StrCat("eps constant has shape ", eps_value->type.to_string(), ", not a scalar"));
    }
    m.eps = *eps;
    m.square = producer_of(m.mean->inputs[0], OpKind::kMul);
    if (m.square == nullptr || m.square->inputs[0] != m.square->inputs[1]) {
      return R::fail("reduce_mean does not read x * x");
    }
    m.x = m.square->inputs[0];
    if (m.x->type.rank() < 1) return R::fail("x is a scalar");
    std::vector<Node*> r_users = g.users(rsqrt->output());
    if (r_users.size() != 1 || r_users[0]->op != OpKind::kMul ||
        other_operand(r_users[0], rsqrt->output()) != m.x) {
      return R::fail("rsqrt result is not used only by x * rsqrt(...)");
    }
    m.normalize = r_users[0];
    std::vector<Node*> n_users = g.users(m.normalize->output());
    if (n_users.size() != 1 || n_users[0]->op != OpKind::kMul) {
      return R::fail("normalized x is not used only by a multiply with the weight");
    }
    m.scale = n_users[0];
    m.w = other_operand(m.scale, m.normalize->output());
    if (m.w == nullptr || m.w->type.rank() != 1 ||
        !(m.w->type.shape[0] == m.x->type.shape.back()) || m.w->type.dtype != m.x->type.dtype) {
      return R::fail(absl::StrCat("weight ", m.w ? m.w->type.to_string() : "?", " is not ",
                                  dtype_name(m.x->type.dtype), "[",
                                  m.x->type.shape.back().to_string(), "]"));
    }
    if (!(m.scale->output()->type == m.x->type)) return R::fail("the weight broadcasts x");
    // The norm's intermediates must die inside the pattern (x itself may have other readers).
    struct Single {
      const Node* node;
      const Node* user;
      const char* what;
    };
    for (const Single& s :
         {Single{m.square, m.mean, "x * x"}, Single{m.mean, m.add_eps, "mean"},
          Single{m.add_eps, m.rsqrt, "mean + eps"}, Single{m.normalize, m.scale, "x * rsqrt"}}) {
      if (!only_used_by(g, s.node->output(), {s.user})) {
        return R::fail(absl::StrCat("intermediate ", s.what, " has another user"));
      }
    }
    if (!only_used_by(g, m.rsqrt->output(), {m.normalize})) {
      return R::fail("intermediate rsqrt has another user");
    }
    // A residual add that gemm-epilogue folds into the GEMM before it stays there (see the
    // pass comment); others join the norm.
    Node* add = producer_of(m.x, OpKind::kAdd);
    if (add != nullptr && add->inputs[0]->type == m.x->type && add->inputs[1]->type == m.x->type &&
        !is_gemm_epilogue_add(g, *add)) {
      m.residual_add = add;
    }
    return R::ok(m);
  }

  static FusedReplacement rewrite(const RmsNormMatch& m) {
    FusedReplacement r;
    r.attrs.set("eps", m.eps);
    r.erase = {m.square, m.mean, m.add_eps, m.rsqrt, m.normalize, m.scale};
    if (m.residual_add != nullptr) {
      // add(h, branch) as models/ writes it: x = the branch, residual = the stream.
      r.op = RmsNormResidualOp::kKind;
      r.inputs = RmsNormResidualOp::operands(/*x=*/m.residual_add->inputs[1],
                                             /*residual=*/m.residual_add->inputs[0], m.w);
      r.replaces.resize(2);
      r.replaces[RmsNormResidualOp::kNormed] = m.scale->output();
      r.replaces[RmsNormResidualOp::kSum] = m.x;
      r.erase.push_back(m.residual_add);
    } else {
      r.op = RmsNormOp::kKind;
      r.inputs = RmsNormOp::operands(m.x, m.w);
      r.replaces = {m.scale->output()};
    }
    return r;
  }
};

/// Fuses RMSNorm (x * rsqrt(mean(x²) + eps) * w) into `rmsnorm`, and together with the residual
/// add that produces x into `rmsnorm_residual` (normed, new residual). Runs after fuse-rope and
/// before gemm-epilogue. A residual add of a GEMM's result (o_proj, down_proj: every one in a
/// Llama graph) is left to gemm-epilogue: the GEMM then reads the residual and writes the sum in
/// its epilogue (4 passes over the [T, H] stream with the norm's read of the sum and write of y,
/// against 5 when the GEMM writes its own result and the norm reads both addends), and a plain
/// rmsnorm before a small-batch GEMV runs inside the GEMV (codegen/families/gemv.h). Other
/// residual adds join the norm here. The sum stays available as the second result for later
/// layers, so legality only concerns the norm's own intermediates.
class FuseRmsNormResidual : public Pass {
 public:
  std::string name() const override { return "fuse-rmsnorm-residual"; }
  std::string description() const override {
    return "residual add + RMSNorm arithmetic -> rmsnorm_residual / rmsnorm";
  }

  absl::StatusOr<bool> run(Graph& graph, PassContext& context) override {
    return fuse_at_anchors<RmsNormPattern>(
        graph, context, name(), OpKind::kRsqrt, [](const FusedReplacement& r) {
          return r.op == OpKind::kRmsNorm ? "rmsnorm" : "rmsnorm_residual";
        });
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_rmsnorm_residual_pass() {
  return std::make_unique<FuseRmsNormResidual>();
}

}  // namespace kiln

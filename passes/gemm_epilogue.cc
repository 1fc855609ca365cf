// gemm-epilogue: matmuls into gemm nodes, folding a following bias add and/or residual add into
// the GEMM's epilogue.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/ops.h"
#include "passes/pass.h"
#include "passes/pass_registry.h"
#include "passes/rewrite.h"

namespace kiln {
namespace {

/// matmul(x, w) [→ add(·, bias[N])] [→ add(·, residual)], each intermediate read once.
struct GemmMatch {
  Node* matmul;
  Node* bias_add = nullptr;
  Node* residual_add = nullptr;
  Value* bias = nullptr;
  Value* residual = nullptr;
};

struct GemmEpiloguePattern {
  // The add that is the single reader of `v`, or nullptr.
  static Node* sole_add(const Graph& g, const Value* v) {
    std::vector<Node*> users = g.users(v);
    if (users.size() != 1 || users[0]->op != OpKind::kAdd || !only_used_by(g, v, {users[0]})) {
      return nullptr;
    }
    if (users[0]->inputs[0] == users[0]->inputs[1]) return nullptr;  // v + v
    return users[0];
  }

  static MatchResult<GemmMatch> match(const Graph& g, Node* matmul) {
    GemmMatch m{};
    m.matmul = matmul;
    const Value* out = matmul->output();
    const Type& t = out->type;
    if (Node* add = sole_add(g, out)) {
      Value* other = other_operand(add, out);
      if (other->type.rank() == 1 && other->type.shape[0] == t.shape.back() &&
          other->type.dtype == t.dtype) {
        m.bias_add = add;
        m.bias = other;
        if (Node* add2 = sole_add(g, add->output())) {
          Value* r = other_operand(add2, add->output());
          if (r->type == t) {
            m.residual_add = add2;
            m.residual = r;
          }
        }
      } else if (other->type == t) {
        m.residual_add = add;
        m.residual = other;
      }
    }
    return MatchResult<GemmMatch>::ok(m);
  }

  static FusedReplacement rewrite(const GemmMatch& m) {
    FusedReplacement r;
    r.op = GemmOp::kKind;
    // matmul(x, w): x·wᵀ, the gemm's x and weight.
    r.inputs = GemmOp::operands(m.matmul->inputs[0], m.matmul->inputs[1], m.bias, m.residual);
    r.erase = {m.matmul};
    Value* result = m.matmul->output();
    if (m.bias_add != nullptr) {
      r.erase.push_back(m.bias_add);
      result = m.bias_add->output();
    }
    if (m.residual_add != nullptr) {
      r.erase.push_back(m.residual_add);
      result = m.residual_add->output();
    }
    r.attrs.set("epilogue", std::string(GemmOp::epilogue_name(
                                GemmOp::epilogue_for(m.bias != nullptr, m.residual != nullptr))));
    r.replaces = {result};
    return r;
  }
};

/// Turns every matmul into `gemm(x, w[, bias][, residual]){epilogue}` (cuBLASLt runs it, the
/// epilogue via its bias pointer and beta = 1), folding a single-use bias add (Qwen2's q/k/v
/// biases) and/or residual add. Runs after fuse-rmsnorm-residual, which has already claimed every
/// residual add that feeds a norm (its kernel reads both addends anyway); what is left here is
/// the last layer's down_proj residual, and after fuse-elementwise, which left these adds alone.
class GemmEpilogue : public Pass {
 public:
  std::string name() const override { return "gemm-epilogue"; }
  std::string description() const override {
    return "matmul [+ bias] [+ residual] -> gemm{epilogue}";
  }

  absl::StatusOr<bool> run(Graph& graph, PassContext& context) override {
    std::vector<Node*> anchors;
    for (const auto& n : graph.nodes()) {
      if (n->op == OpKind::kMatmul) anchors.push_back(n.get());
    }
    bool changed = false;
    for (Node* matmul : anchors) {
      GemmMatch m = *GemmEpiloguePattern::match(graph, matmul).match;
      FusedReplacement r = GemmEpiloguePattern::rewrite(m);
      if (std::string why = placement_problem(graph, r); !why.empty() && m.residual != nullptr) {
        // A residual defined too late: keep the bias (if any) and leave the residual add.
        context.count(name(), "residual not folded: " + why);
        m.residual_add = nullptr;
        m.residual = nullptr;
        r = GemmEpiloguePattern::rewrite(m);
      }
      if (std::string why = placement_problem(graph, r); !why.empty()) {
        context.count(name(), "not fused: " + why);
        continue;
      }
      absl::StatusOr<Node*> fused = apply_replacement(graph, r);
      if (!fused.ok()) return fused.status();
      context.count(name(), r.attrs.string_or("epilogue", "?"));
      changed = true;
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> make_gemm_epilogue_pass() { return std::make_unique<GemmEpilogue>(); }

}  // namespace kiln

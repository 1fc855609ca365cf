// fuse-rope: cos/sin table gathers plus the rotate-half (or interleaved) arithmetic into `rope`.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/ops.h"
#include "passes/pass.h"
#include "passes/pass_registry.h"
#include "passes/rewrite.h"

namespace kiln {
namespace {

// A cos or sin operand as models/ builds it: reshape([0,1,D]) of an optional cast of
// gather(rope_table, positions).
struct TableView {
  Node* table = nullptr;
  Value* positions = nullptr;
  std::string part;
};

MatchResult<TableView> trace_table(const Value* v, int64_t head_dim) {
  using R = MatchResult<TableView>;
  Node* reshape = producer_of(v, OpKind::kReshape);
  if (reshape == nullptr) return R::fail("operand is not a reshaped rope table row");
  if (v->type.rank() != 3 || !(v->type.shape[1] == Dim::constant(1)) ||
      !(v->type.shape[2] == Dim::constant(head_dim))) {
    return R::fail(
        absl::StrCat("rope table view is ", v->type.to_string(), ", not [T,1,", head_dim, "]"));
  }
  const Value* rows = reshape->inputs[0];
  if (Node* cast = producer_of(rows, OpKind::kCast); cast != nullptr) rows = cast->inputs[0];
  Node* gather = producer_of(rows, OpKind::kGather);
  if (gather == nullptr) return R::fail("rope table view does not gather by position");
  Node* table = producer_of(gather->inputs[0], OpKind::kRopeTable);
  if (table == nullptr) return R::fail("gathered table is not a rope_table");
  TableView t;
  t.table = table;
  t.positions = gather->inputs[1];
  t.part = table->attrs.string_or("part", "");
  return R::ok(t);
}

int64_t norm_axis(int64_t axis, int rank) { return axis < 0 ? axis + rank : axis; }

bool is_slice(const Node* n, int64_t start, int64_t end) {
  if (n == nullptr || n->op != OpKind::kSlice) return false;
  const int rank = n->inputs[0]->type.rank();
  return norm_axis(n->attrs.int_or("axis", -100), rank) == rank - 1 &&
         n->attrs.int_or("start", -1) == start && n->attrs.int_or("end", -1) == end;
}

/// RoPE as models/ emits it, anchored on the concat of the rotation:
///   half:        rot = concat(neg(x[..., D/2:]), x[..., :D/2])
///   interleaved: p = reshape(x, [T,H,D/2,2]); rot = reshape(concat(neg(p[..., 1:2]), p[..., 0:1]))
///   y = add(mul(x, cos), mul(rot, sin))   (operands in either order)
struct RopeMatch {
  std::vector<Node*> rotation;  // slices, neg, concat, reshapes
  Node *mul_cos, *mul_sin, *add;
  Value* x;
  TableView cos, sin;
  std::string layout;
};

struct RopePattern {
  static MatchResult<RopeMatch> match(const Graph& g, Node* concat) {
    using R = MatchResult<RopeMatch>;
    RopeMatch m{};
    if (concat->inputs.size() != 2) return R::fail("concat of more than two parts");
    const int rank = concat->output()->type.rank();
    if (norm_axis(concat->attrs.int_or("axis", -100), rank) != rank - 1) {
      return R::fail("concat is not along the last axis");
    }
    Node* neg = producer_of(concat->inputs[0], OpKind::kNeg);
    Node* second =
        concat->inputs[1]->kind == ValueKind::kResult ? concat->inputs[1]->producer : nullptr;
    Node* first = neg ? producer_of(neg->inputs[0], OpKind::kSlice) : nullptr;
    if (neg == nullptr || first == nullptr || second == nullptr || second->op != OpKind::kSlice ||
        first->inputs[0] != second->inputs[0]) {
      return R::fail("concat is not a rotation (neg(slice(x)), slice(x))");
    }
    Value* sliced = first->inputs[0];
    Value* rot = concat->output();
    m.rotation = {first, second, neg, concat};
    if (rank == 3) {
      m.layout = "half";
      m.x = sliced;
      const Dim& d = m.x->type.shape[2];
      if (d.is_symbolic() || d.value % 2 != 0) return R::fail("head_dim is not an even constant");
      if (!is_slice(second, 0, d.value / 2) || !is_slice(first, d.value / 2, d.value)) {
        return R::fail("slices are not the two halves of the head");
      }
    } else if (rank == 4) {
      m.layout = "interleaved";
      Node* pairs = producer_of(sliced, OpKind::kReshape);
      if (pairs == nullptr) return R::fail("interleaved pairs are not a reshape of x");
      m.x = pairs->inputs[0];
      if (m.x->type.rank() != 3 || m.x->type.shape[2].is_symbolic()) {
        return R::fail("x is not [T, heads, head_dim]");
      }
      const int64_t d = m.x->type.shape[2].value;
      const Shape want = {m.x->type.shape[0], m.x->type.shape[1], Dim::constant(d / 2),
                          Dim::constant(2)};
      if (!(sliced->type.shape == want)) return R::fail("pairs are not [T, heads, D/2, 2]");
      if (!is_slice(second, 0, 1) || !is_slice(first, 1, 2)) {
        return R::fail("slices are not the even and odd elements of each pair");
      }
      std::vector<Node*> users = g.users(rot);
      if (users.size() != 1 || users[0]->op != OpKind::kReshape ||
          !(users[0]->output()->type == m.x->type)) {
        return R::fail("rotated pairs are not reshaped back to x's shape");
      }
      if (!only_used_by(g, sliced, {first, second})) {
        return R::fail("intermediate pairs has another user");
      }
      m.rotation.push_back(pairs);
      m.rotation.push_back(users[0]);
      rot = users[0]->output();
    } else {
      return R::fail("rotation is neither [T,H,D] nor [T,H,D/2,2]");
    }
    if (!only_used_by(g, first->output(), {neg}) || !only_used_by(g, neg->output(), {concat}) ||
        !only_used_by(g, second->output(), {concat})) {
      return R::fail("an intermediate of the rotation has another user");
    }
    if (rot != concat->output() && !only_used_by(g, concat->output(), {rot->producer})) {
      return R::fail("intermediate concat has another user");
    }
    std::vector<Node*> rot_users = g.users(rot);
    if (rot_users.size() != 1 || rot_users[0]->op != OpKind::kMul ||
        !only_used_by(g, rot, {rot_users[0]})) {
      return R::fail("rotated x is not used only by a multiply with sin");
    }
    m.mul_sin = rot_users[0];
    std::vector<Node*> sin_users = g.users(m.mul_sin->output());
    if (sin_users.size() != 1 || sin_users[0]->op != OpKind::kAdd ||
        !only_used_by(g, m.mul_sin->output(), {sin_users[0]})) {
      return R::fail("rotated x * sin is not used only by an add");
    }
    m.add = sin_users[0];
    Value* cos_term = other_operand(m.add, m.mul_sin->output());
    m.mul_cos = producer_of(cos_term, OpKind::kMul);
    if (m.mul_cos == nullptr || other_operand(m.mul_cos, m.x) == nullptr) {
      return R::fail("the other addend is not x * cos");
    }
    if (!only_used_by(g, cos_term, {m.add})) return R::fail("x * cos has another user");
    const int64_t d = m.x->type.shape[2].value;
    MatchResult<TableView> cos = trace_table(other_operand(m.mul_cos, m.x), d);
    if (!cos) return R::fail("cos: " + cos.reason);
    MatchResult<TableView> sin = trace_table(other_operand(m.mul_sin, rot), d);
    if (!sin) return R::fail("sin: " + sin.reason);
    m.cos = *cos.match;
    m.sin = *sin.match;
    if (m.cos.part != "cos" || m.sin.part != "sin") {
      return R::fail("x is multiplied by the sin table and the rotation by the cos table");
    }
    if (m.cos.positions != m.sin.positions)
      return R::fail("cos and sin gather different positions");
    Attributes a = m.cos.table->attrs, b = m.sin.table->attrs;
    a.erase("part");
    b.erase("part");
    if (!(a == b)) return R::fail("cos and sin tables have different attributes");
    if (a.string_or("layout", "") != m.layout) {
      return R::fail(absl::StrCat("tables are for layout \"", a.string_or("layout", ""),
                                  "\" but the rotation is \"", m.layout, "\""));
    }
    if (a.int_or("rotary_dim", 0) != d) {
      return R::fail("rotary_dim differs from head_dim (partial rotary is not matched)");
    }
    if (!(m.add->output()->type == m.x->type)) return R::fail("the tables broadcast x");
    return R::ok(m);
  }

  static FusedReplacement rewrite(const RopeMatch& m) {
    FusedReplacement r;
    r.op = RopeOp::kKind;
    r.inputs = RopeOp::operands(m.x, m.cos.positions);
    r.attrs = m.cos.table->attrs;  // theta, rotary_dim, layout and llama3 scaling_* carry over
    r.attrs.erase("part");
    r.attrs.erase("max_positions");
    r.replaces = {m.add->output()};
    r.erase = m.rotation;
    r.erase.insert(r.erase.end(), {m.mul_cos, m.mul_sin, m.add});
    return r;
  }
};

/// Fuses rotary embeddings: the gathers of the cos/sin rope tables by position and the rotation
/// arithmetic become `rope(x, positions)` with the table's attributes (theta, rotary_dim,
/// layout, llama3 scaling). Runs first among the fusions so that fuse-attention sees rope outputs
/// feeding q and k; the shared table chains die once every head group is fused.
class FuseRope : public Pass {
 public:
  std::string name() const override { return "fuse-rope"; }
  std::string description() const override {
    return "rope_table gathers + rotate-half/interleaved arithmetic -> rope";
  }

  absl::StatusOr<bool> run(Graph& graph, PassContext& context) override {
    return fuse_at_anchors<RopePattern>(graph, context, name(), OpKind::kConcat,
                                        [](const FusedReplacement&) { return "fused"; });
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_rope_pass() { return std::make_unique<FuseRope>(); }

}  // namespace kiln

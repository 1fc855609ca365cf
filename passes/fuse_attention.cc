// fuse-attention: paged attention in primitive ops (KV writes, q·k, scale, causal mask, softmax,
// p·v) into one flash_attention node.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/ops.h"
#include "passes/pass.h"
#include "passes/pass_registry.h"
#include "passes/rewrite.h"

namespace kiln {
namespace {

/// Attention as models/ emits it, anchored on paged_qk:
///   kc = kv_write(k_cache, k, slot); vc = kv_write(v_cache, v, slot)
///   s = paged_qk(q, kc, meta...); s = mul(s, scale)?; s = causal_mask(s, positions)
///   p = div(exp(sub(s, reduce_max(s))), reduce_sum(exp(...))); o = paged_pv(p, vc, meta...)
struct AttentionMatch {
  Node *k_write, *v_write, *qk, *scale_mul, *mask, *max, *sub, *exp, *sum, *div, *pv;
  double scale = 1.0;
};

struct AttentionPattern {
  static MatchResult<AttentionMatch> match(const Graph& g, Node* qk) {
    using R = MatchResult<AttentionMatch>;
    AttentionMatch m{};
    m.qk = qk;
    if (!PagedQkOp::matches(qk)) return R::fail("paged_qk has the wrong operand count");
    const PagedQkOp qk_op(*qk);
    m.k_write = producer_of(qk_op.k_cache(), OpKind::kKvWrite);
    if (!KvWriteOp::matches(m.k_write))
      return R::fail("paged_qk reads a K cache not written in this step");
    Value* s = qk->output();
    auto sole_user = [&](const Value* v) -> Node* {
      std::vector<Node*> users = g.users(v);
      return users.size() == 1 && only_used_by(g, v, {users[0]}) ? users[0] : nullptr;
    };
    Node* next = sole_user(s);
    if (next == nullptr) return R::fail("intermediate scores have more than one user");
    m.scale_mul = nullptr;
    if (next->op == OpKind::kMul) {
      m.scale_mul = next;
      std::optional<double> scale = scalar_constant(other_operand(next, s));
      if (!scale) return R::fail("scores are scaled by something other than a scalar constant");
      m.scale = *scale;
      s = next->output();
      next = sole_user(s);
      if (next == nullptr) return R::fail("intermediate scaled scores have more than one user");
    }
    if (!CausalMaskOp::matches(next) || CausalMaskOp(*next).scores() != s) {
      return R::fail("scores are not causally masked");
    }
    m.mask = next;
    s = m.mask->output();
    // softmax(s) = exp(s - max(s)) / sum(exp(s - max(s)))
    std::vector<Node*> s_users = g.users(s);
    for (Node* u : s_users) {
      if (u->op == OpKind::kReduceMax) m.max = u;
      if (u->op == OpKind::kSub) m.sub = u;
    }
    if (m.max == nullptr || m.sub == nullptr || s_users.size() != 2 || m.sub->inputs[0] != s ||
        m.sub->inputs[1] != m.max->output() || !only_used_by(g, s, {m.max, m.sub}) ||
        !only_used_by(g, m.max->output(), {m.sub})) {
      return R::fail("masked scores do not feed a softmax's max and subtraction alone");
    }
    m.exp = sole_user(m.sub->output());
    if (m.exp == nullptr || m.exp->op != OpKind::kExp) return R::fail("softmax has no exp");
    std::vector<Node*> e_users = g.users(m.exp->output());
    for (Node* u : e_users) {
      if (u->op == OpKind::kReduceSum) m.sum = u;
      if (u->op == OpKind::kDiv) m.div = u;
    }
    if (m.sum == nullptr || m.div == nullptr || e_users.size() != 2 ||
        m.div->inputs[0] != m.exp->output() || m.div->inputs[1] != m.sum->output() ||
        !only_used_by(g, m.exp->output(), {m.sum, m.div}) ||
        !only_used_by(g, m.sum->output(), {m.div})) {
      return R::fail("exp does not feed a softmax's sum and division alone");
    }
    m.pv = sole_user(m.div->output());
    if (!PagedPvOp::matches(m.pv) || PagedPvOp(*m.pv).probs() != m.div->output()) {
      return R::fail("probabilities are not used only by paged_pv");
    }
    const PagedPvOp pv(*m.pv);
    if (pv.pages() != qk_op.pages()) return R::fail("paged_qk and paged_pv page differently");
    m.v_write = producer_of(pv.v_cache(), OpKind::kKvWrite);
    if (!KvWriteOp::matches(m.v_write))
      return R::fail("paged_pv reads a V cache not written in this step");
    const KvWriteOp k_write(*m.k_write), v_write(*m.v_write);
    if (v_write.slot_mapping() != k_write.slot_mapping()) {
      return R::fail("K and V rows go to different slots");
    }
    if (!(k_write.rows()->type == v_write.rows()->type)) {
      return R::fail("K and V rows have different types");
    }
    // fp8e4m3 caches: the reads take exactly the scale arrays the writes return.
    if (k_write.has_scales() != v_write.has_scales()) {
      return R::fail("one of the K and V caches has a scale array and the other not");
    }
    if (qk_op.k_scales() != k_write.scales_out() || pv.v_scales() != v_write.scales_out()) {
      return R::fail("paged_qk / paged_pv read scales other than the ones their cache write wrote");
    }
    if (!(pv.output()->type == qk_op.q()->type)) {
      return R::fail(absl::StrCat("output ", pv.output()->type.to_string(), " differs from q ",
                                  qk_op.q()->type.to_string()));
    }
    return R::ok(m);
  }

  static FusedReplacement rewrite(const AttentionMatch& m) {
    FusedReplacement r;
    const PagedQkOp qk(*m.qk);
    const KvWriteOp k_write(*m.k_write), v_write(*m.v_write);
    r.op = FlashAttentionOp::kKind;
    r.inputs = FlashAttentionOp::operands({.q = qk.q(),
                                           .k = k_write.rows(),
                                           .v = v_write.rows(),
                                           .k_cache = k_write.cache(),
                                           .v_cache = v_write.cache(),
                                           .positions = CausalMaskOp(*m.mask).positions(),
                                           .slot_mapping = k_write.slot_mapping(),
                                           .pages = qk.pages(),
                                           .k_scales = k_write.scales(),
                                           .v_scales = v_write.scales()});
    r.attrs.set("scale", m.scale);
    r.replaces.resize(k_write.has_scales() ? 5 : 3);
    r.replaces[FlashAttentionOp::kOutput] = PagedPvOp(*m.pv).output();
    r.replaces[FlashAttentionOp::kKCacheOut] = k_write.cache_out();
    r.replaces[FlashAttentionOp::kVCacheOut] = v_write.cache_out();
    if (k_write.has_scales()) {
      r.replaces[FlashAttentionOp::kKScalesOut] = k_write.scales_out();
      r.replaces[FlashAttentionOp::kVScalesOut] = v_write.scales_out();
    }
    r.erase = {m.k_write, m.v_write, m.qk, m.mask, m.max, m.sub, m.exp, m.sum, m.div, m.pv};
    if (m.scale_mul != nullptr) r.erase.push_back(m.scale_mul);
    return r;
  }
};

/// Fuses paged attention into `flash_attention(q, k, v, caches, positions, slot_mapping, page
/// metadata){scale}` returning (out, k_cache', v_cache'): the KV writes, q·k, scaling, causal mask,
/// softmax and p·v become one op for prefill and decode alike (GQA by head ratio). Runs after
/// fuse-rope (q and k are rope outputs then). After it no [T, H, K] scores buffer exists, which
/// plan-memory's arena shows. A non-causal (unmasked) attention is left alone.
class FuseAttention : public Pass {
 public:
  std::string name() const override { return "fuse-attention"; }
  std::string description() const override {
    return "kv_write + paged_qk + scale + causal_mask + softmax + paged_pv -> flash_attention";
  }

  absl::StatusOr<bool> run(Graph& graph, PassContext& context) override {
    return fuse_at_anchors<AttentionPattern>(graph, context, name(), OpKind::kPagedQk,
                                             [](const FusedReplacement&) { return "fused"; });
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_attention_pass() { return std::make_unique<FuseAttention>(); }

}  // namespace kiln

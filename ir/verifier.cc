// Verifier implementation.
#include "ir/verifier.h"

#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "ir/printer.h"
#include "ir/type_inference.h"

namespace kiln {
namespace {

// An echoed IR line is cut short: a hostile or generated file can hold a megabyte-long
// attribute or name on one line, and the error must stay readable.
std::string clip_for_message(absl::string_view text) {
  constexpr size_t kMaxEcho = 240;
  if (text.size() <= kMaxEcho) return std::string(text);
  return absl::StrCat(text.substr(0, kMaxEcho), "... (", text.size() - kMaxEcho, " more bytes)");
}

absl::Status check_type_symbols(const Type& type, const SymbolTable& symbols,
                                absl::string_view where) {
  for (const Dim& d : type.shape) {
    if (d.is_symbolic() && symbols.find(d.symbol) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": type ", type.to_string(), " uses undeclared symbol ", d.symbol));
    }
    if (!d.is_symbolic() && d.value < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": negative dim in ", type.to_string()));
    }
  }
  return absl::OkStatus();
}

// A derived param's parts (one rank's, for a sharded param) share one axis and tile the param
// along it: rows stack into a constant first dim, columns join into the second dim of a matrix.
absl::Status check_param_parts(const Value& v, const std::vector<ParamPart>& parts,
                               const std::string& where) {
  const SliceAxis axis = parts[0].axis;
  int64_t extent = 0;
  for (const ParamPart& p : parts) {
    if (p.axis != axis) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": its parts mix rows and columns (one axis per param)"));
    }
    if (p.begin < 0 || p.end <= p.begin) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": part \"", p.source, "\" has an empty ", slice_axis_name(axis), " range"));
    }
    extent += p.end - p.begin;
  }
  const int dim = axis == SliceAxis::kRows ? 0 : 1;
  if (axis == SliceAxis::kCols && v.type.rank() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": column parts make a matrix, but its type is ", v.type.to_string()));
  }
  if (v.type.rank() <= dim || v.type.shape[dim].is_symbolic() ||
      v.type.shape[dim].value != extent) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": its parts hold ", extent, " ",
                                                   slice_axis_name(axis), " but its type is ",
                                                   v.type.to_string()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status verify(const Graph& graph) {
  if (graph.ranks() < 1) {
    return absl::InvalidArgumentError(absl::StrCat("graph runs on ", graph.ranks(), " ranks"));
  }
  ValueNames names(graph);
  std::unordered_set<const Value*> defined;
  std::unordered_set<std::string> declared_names;
  for (const auto* list : {&graph.inputs(), &graph.params()}) {
    for (const Value* v : *list) {
      std::string where = names(v);
      if (!is_valid_value_name(v->name)) {
        return absl::InvalidArgumentError(
            absl::StrCat("invalid name '", clip_for_message(v->name), "' for ", where));
      }
      if (!declared_names.insert(where).second) {
        return absl::InvalidArgumentError(absl::StrCat(where, " is declared twice"));
      }
      if (absl::Status s = check_type_symbols(v->type, graph.symbols(), where); !s.ok()) return s;
      if (!v->parts.empty() && v->sharded()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, " has both parts and per-rank shards"));
      }
      if (!v->parts.empty()) {
        if (absl::Status s = check_param_parts(*v, v->parts, where); !s.ok()) return s;
      }
      if (v->sharded()) {
        if (static_cast<int>(v->rank_parts.size()) != graph.ranks()) {
          return absl::InvalidArgumentError(absl::StrCat(where, " has ", v->rank_parts.size(),
                                                         " shards but the graph runs on ",
                                                         graph.ranks(), " rank(s)"));
        }
        for (size_t r = 0; r < v->rank_parts.size(); ++r) {
          if (v->rank_parts[r].empty()) {
            return absl::InvalidArgumentError(absl::StrCat(where, ": rank ", r, " has no parts"));
          }
          if (absl::Status s =
                  check_param_parts(*v, v->rank_parts[r], absl::StrCat(where, " (rank ", r, ")"));
              !s.ok()) {
            return s;
          }
        }
      }
      defined.insert(v);
    }
  }
  for (const auto& node : graph.nodes()) {
    auto fail = [&](absl::string_view msg) {
      return absl::InvalidArgumentError(
          absl::StrCat(clip_for_message(print_node(*node, names)), ": ", clip_for_message(msg)));
    };
    const OpTraits traits = op_traits(node->op);
    if (traits.num_outputs >= 0 && static_cast<int>(node->outputs.size()) != traits.num_outputs) {
      return fail(absl::StrCat("has ", node->outputs.size(), " results, ", op_name(node->op),
                               " has ", traits.num_outputs));
    }
    std::vector<Type> input_types;
    for (size_t i = 0; i < node->inputs.size(); ++i) {
      const Value* in = node->inputs[i];
      if (in == nullptr || !defined.count(in)) {
        return fail(absl::StrCat("input ", i, " (", in ? names(in) : "null",
                                 ") is not defined before this node"));
      }
      input_types.push_back(in->type);
    }
    for (const Value* out : node->outputs) {
      if (defined.count(out)) return fail(absl::StrCat(names(out), " is defined twice"));
      if (out->producer != node.get())
        return fail(absl::StrCat(names(out), " has another producer"));
      if (absl::Status s = check_type_symbols(out->type, graph.symbols(), names(out)); !s.ok()) {
        return fail(s.message());
      }
      if (!out->name.empty() && !is_valid_value_name(out->name)) {
        return fail(absl::StrCat("invalid result name '", out->name, "'"));
      }
      if (!out->name.empty() && !declared_names.insert(names(out)).second) {
        return fail(absl::StrCat(names(out), " is defined twice"));
      }
    }
    absl::StatusOr<std::vector<Type>> inferred =
        infer_types(node->op, input_types, node->attrs, graph.symbols());
    if (!inferred.ok()) return fail(inferred.status().message());
    if (inferred->size() != node->outputs.size()) {
      return fail(absl::StrCat("has ", node->outputs.size(), " results, ", op_name(node->op),
                               " with these operands has ", inferred->size()));
    }
    for (size_t i = 0; i < node->outputs.size(); ++i) {
      if (!((*inferred)[i] == node->outputs[i]->type)) {
        return fail(absl::StrCat("result ", i, " is declared ", node->outputs[i]->type.to_string(),
                                 " but ", op_name(node->op), " produces ",
                                 (*inferred)[i].to_string()));
      }
    }
    if (op_traits(node->op).collective && node->attrs.int_or("ranks", 0) != graph.ranks()) {
      // A collective spans the whole group: every rank of the program, no subset.
      return fail(absl::StrCat("spans ", node->attrs.int_or("ranks", 0),
                               " ranks but the graph runs on ", graph.ranks()));
    }
    for (const Value* out : node->outputs) defined.insert(out);
  }
  if (graph.outputs().empty()) return absl::InvalidArgumentError("graph has no outputs");
  std::unordered_set<std::string> output_names;
  for (const GraphOutput& o : graph.outputs()) {
    if (!output_names.insert(o.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("output ", o.name, " is declared twice"));
    }
    if (o.value == nullptr || !defined.count(o.value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("output ", o.name, " is not defined by any input, param or node"));
    }
  }
  return absl::OkStatus();
}

}  // namespace kiln

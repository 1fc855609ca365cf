// IR text printer.
#include "ir/printer.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kiln {
namespace {

bool is_number(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

bool is_valid_value_name(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.') return false;
  }
  return true;
}

ValueNames::ValueNames(const Graph& graph) {
  for (const Value* v : graph.inputs()) names_[v] = absl::StrCat("%", v->name);
  for (const Value* v : graph.params()) names_[v] = absl::StrCat("@", v->name);
  int next = 0;
  for (const auto& n : graph.nodes()) {
    for (const Value* v : n->outputs) {
      if (!v->name.empty() && !is_number(v->name)) {
        names_[v] = absl::StrCat("%", v->name);
      } else {
        names_[v] = absl::StrCat("%", next++);
      }
    }
  }
}

std::string ValueNames::operator()(const Value* value) const {
  auto it = names_.find(value);
  return it == names_.end() ? std::string("%<undefined>") : it->second;
}

std::string print_node(const Node& node, const ValueNames& names) {
  auto name_of = [&](std::string* out, const Value* v) { out->append(names(v)); };
  std::string line =
      absl::StrCat(absl::StrJoin(node.outputs, ", ", name_of), " = ", op_name(node.op), "(",
                   absl::StrJoin(node.inputs, ", ", name_of), ")");
  if (!node.attrs.empty()) {
    line += " {";
    line += absl::StrJoin(node.attrs.all(), ", ", [](std::string* out, const auto& kv) {
      absl::StrAppend(out, kv.first, " = ", attribute_to_string(kv.second));
    });
    line += "}";
  }
  line += " : ";
  line += absl::StrJoin(node.outputs, ", ",
                        [](std::string* out, const Value* v) { out->append(v->type.to_string()); });
  return line;
}

std::string print_param_parts(const std::vector<ParamPart>& parts) {
  // Every part of one list shares an axis (the verifier checks it); a mixed list prints each
  // part's own axis so that the verifier, not the printer, reports it.
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    const ParamPart& p = parts[i];
    if (i == 0 || p.axis != parts[i - 1].axis) {
      absl::StrAppend(&out, i ? "), " : "", slice_axis_name(p.axis), "(");
    } else {
      out += ", ";
    }
    absl::StrAppend(&out, attribute_to_string(Attribute(p.source)), "[", p.begin, ":", p.end, "]");
  }
  if (!parts.empty()) out += ")";
  return out;
}

std::string print_graph(const Graph& graph) {
  ValueNames names(graph);
  std::string out = absl::StrCat("graph @", graph.name(), " {\n");
  if (graph.ranks() != 1) absl::StrAppend(&out, "  ranks ", graph.ranks(), "\n");
  for (const Symbol& s : graph.symbols().symbols()) {
    absl::StrAppend(&out, "  symbol ", s.name, " <= ", s.upper_bound, "\n");
  }
  for (const Value* v : graph.inputs()) {
    absl::StrAppend(&out, "  input ", names(v), " : ", v->type.to_string(), "\n");
  }
  for (const Value* v : graph.params()) {
    absl::StrAppend(&out, "  param ", names(v), " : ", v->type.to_string());
    if (!v->parts.empty()) {
      // A derived param: `= rows("<checkpoint tensor>"[begin:end], ...)` (or cols(...)).
      absl::StrAppend(&out, " = ", print_param_parts(v->parts));
    } else if (v->sharded()) {
      // One derivation per rank, in rank order, one per line.
      absl::StrAppend(&out, " = shards(");
      for (size_t r = 0; r < v->rank_parts.size(); ++r) {
        absl::StrAppend(&out, r ? "," : "", "\n      ", print_param_parts(v->rank_parts[r]));
      }
      absl::StrAppend(&out, ")");
    }
    absl::StrAppend(&out, "\n");
  }
  for (const auto& n : graph.nodes()) absl::StrAppend(&out, "  ", print_node(*n, names), "\n");
  for (const GraphOutput& o : graph.outputs()) {
    absl::StrAppend(&out, "  output ", o.name, " = ", names(o.value), "\n");
  }
  out += "}\n";
  return out;
}

}  // namespace kiln

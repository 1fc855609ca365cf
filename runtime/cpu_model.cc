// Loading a model for the CPU reference backend.
#include "runtime/cpu_model.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/model_source.h"
#include "passes/pass_manager.h"

namespace kiln {
namespace {

int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuModel>> CpuModel::load(const std::string& path,
                                                         const CpuModelOptions& options) {
  if (options.weights_dtype != DType::kF32 && options.weights_dtype != DType::kBF16) {
    return absl::InvalidArgumentError("CPU weights dtype must be f32 or bf16");
  }
  absl::StatusOr<ModelFormat> format = detect_model_format(path);
  if (!format.ok()) return format.status();
  std::unique_ptr<CpuModel> model(new CpuModel());
  model->path_ = path;

  absl::StatusOr<WeightSet> weights =
      *format == ModelFormat::kGguf ? load_gguf_weights(path) : load_safetensors_weights(path);
  if (!weights.ok()) return weights.status();
  model->weights_ = std::move(*weights);

  absl::StatusOr<ModelConfig> config = load_model_config(path);
  if (!config.ok()) return config.status();
  model->config_ = *config;

  absl::StatusOr<Tokenizer> tokenizer =
      *format == ModelFormat::kGguf
          ? Tokenizer::from_gguf(*model->weights_.gguf())
          : Tokenizer::from_tokenizer_json(
                (std::filesystem::path(path) / "tokenizer.json").string());
  if (!tokenizer.ok()) return tokenizer.status();
  model->tokenizer_ = std::make_unique<Tokenizer>(std::move(*tokenizer));

  model->limits_ = options.limits;
  model->limits_.dtype = options.weights_dtype;
  Graph graph;
  if (absl::Status s = build_llama(model->config_, model->limits_, graph); !s.ok()) return s;
  if (options.run_passes) {
    PassContext context;
    if (absl::Status s = run_default_pipeline(graph, context); !s.ok()) return s;
  }

  // Bind every graph param: use the mapped bytes when the file already holds the compute dtype,
  // convert (widen, narrow or dequantize) otherwise.
  const DType want = options.weights_dtype;
  for (const Value* p : graph.params()) {
    const Weight* w = model->weights_.find(p->name);
    if (w == nullptr) {
      return absl::NotFoundError(
          absl::StrCat(path, ": the checkpoint has no tensor for parameter '", p->name, "'"));
    }
    std::vector<int64_t> shape;
    for (const Dim& d : p->type.shape) shape.push_back(d.value);
    if (w->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor '", w->source_name, "' has shape [", absl::StrJoin(w->shape, ","),
          "], the config needs [", absl::StrJoin(shape, ","), "]"));
    }
    ParamView view{want, shape, nullptr};
    const int64_t n = element_count(shape);
    if (w->dtype == want) {
      view.data = w->bytes.data();
    } else {
      std::vector<uint8_t>& buf = model->converted_.emplace_back(n * block_bytes(want));
      absl::Status s =
          want == DType::kF32
              ? to_f32(*w, absl::Span<float>(reinterpret_cast<float*>(buf.data()), n))
              : to_bf16(*w, absl::Span<uint16_t>(reinterpret_cast<uint16_t*>(buf.data()), n));
      if (!s.ok()) return s;
      view.data = buf.data();
    }
    model->weight_bytes_ += n * block_bytes(want);
    model->params_.emplace(p->name, std::move(view));
  }
  absl::StatusOr<std::unique_ptr<ReferenceExecutor>> exec =
      ReferenceExecutor::create(graph, model->params_, options.num_threads);
  if (!exec.ok()) return exec.status();
  model->executor_ = std::move(*exec);
  return model;
}

}  // namespace kiln

// The GPU GraphTuner (see gpu_tuner.h).
#include "codegen/tune/gpu_tuner.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "codegen/kernel_cache.h"
#include "codegen/kernel_source.h"
#include "codegen/tune/decode_attention_tuning.h"
#include "codegen/tune/rmsnorm_tuning.h"
#include "codegen/tune/tuner.h"
#include "runtime/cuda/driver.h"

namespace kiln {
namespace {

class GpuTuneDevice final : public TuneDevice {
 public:
  GpuTuneDevice(GpuDevice gpu, const std::string& cache_dir)
      : gpu_(std::move(gpu)), cache_(cache_dir) {}

  std::string name() const override { return gpu_.name(); }
  GpuDevice* gpu() override { return &gpu_; }

  absl::Status prepare(const std::vector<std::shared_ptr<const KernelSpec>>& specs) override {
    std::vector<KernelJob> jobs;
    std::map<std::string, bool> queued;
    for (const auto& s : specs) {
      const std::string key = s->key();
      if (kernels_.count(key) || !queued.emplace(key, true).second) continue;
      absl::StatusOr<std::string> src = emit_kernel_source(*s);
      if (!src.ok()) return src.status();
      jobs.push_back({key, *src});
    }
    if (jobs.empty()) return absl::OkStatus();
    absl::StatusOr<std::vector<CompiledKernel>> built =
        build_kernels(jobs, gpu_.arch(), &cache_, 0, nullptr);
    if (!built.ok()) return built.status();
    for (const CompiledKernel& k : *built) {
      absl::StatusOr<GpuKernel> loaded = gpu_.load_kernel(k.cubin, k.name);
      if (!loaded.ok()) return loaded.status();
      kernels_.emplace(k.name, std::move(*loaded));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<const GpuKernel*> kernel(const std::string& key) override {
    auto it = kernels_.find(key);
    if (it == kernels_.end()) return absl::NotFoundError(absl::StrCat("kernel ", key, " not prepared"));
    return &it->second;
  }

 private:
  GpuDevice gpu_;
  KernelCache cache_;
  std::map<std::string, GpuKernel> kernels_;
};

class GpuGraphTuner final : public GraphTuner {
 public:
  GpuGraphTuner(GpuDevice gpu, const std::string& cache_dir)
      : device_(std::move(gpu), cache_dir), cache_path_(tune_cache_path(cache_dir)) {}

  absl::StatusOr<std::string> tune(Graph& graph) override {
    absl::StatusOr<TuneCache> cache = TuneCache::load(cache_path_);
    if (!cache.ok()) return cache.status();
    absl::StatusOr<std::vector<TuneResult>> r =
        tune_graph(graph, {&decode_, &rmsnorm_}, device_, *cache);
    if (!r.ok()) return r.status();
    if (absl::Status s = cache->save(); !s.ok()) return s;
    return absl::StrCat("tuned on ", device_.gpu()->describe(), " (cache ", cache_path_, ")\n",
                        tune_report(*r));
  }

 private:
  GpuTuneDevice device_;
  std::string cache_path_;
  DecodeAttentionTuning decode_;
  RmsNormTuning rmsnorm_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GraphTuner>> make_gpu_tuner(const std::string& kernel_cache_dir) {
  absl::StatusOr<GpuDevice> gpu = open_gpu(0);
  if (!gpu.ok()) return gpu.status();
  return std::unique_ptr<GraphTuner>(new GpuGraphTuner(std::move(*gpu), kernel_cache_dir));
}

}  // namespace kiln

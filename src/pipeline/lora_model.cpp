// with_loras: read each LoRA against the model's components, then wrap the touched components'
// weights in merged sources (src/pipeline/lora_model.h).
#include "pipeline/lora_model.h"

#include <map>
#include <memory>

namespace sdmpi {

ModelSource with_loras(const ModelSource& model, const std::vector<LoraSpec>& loras) {
  if (loras.empty()) return model;
  std::map<std::string, std::shared_ptr<WeightSource>> current;
  std::map<std::string, const WeightSource*> targets;
  for (const char* component : {"unet", "text_encoder", "text_encoder_2"}) {
    if (!model.has(component)) continue;
    current[component] = model.weights(component);
    targets[component] = current[component].get();
  }
  std::vector<std::pair<std::shared_ptr<const LoraFile>, float>> files;
  std::map<std::string, bool> touched;
  for (const LoraSpec& spec : loras) {
    auto file = std::make_shared<const LoraFile>(read_lora(spec.path, targets));
    for (const LoraLayer& layer : file->layers) touched[layer.component] = true;
    files.emplace_back(std::move(file), spec.scale);
  }
  std::map<std::string, std::shared_ptr<WeightSource>> merged;
  for (const auto& [component, yes] : touched)
    merged[component] = std::make_shared<LoraMergedWeightSource>(current.at(component), component, files);
  return model.with_weights(std::move(merged));
}

}  // namespace sdmpi

// The parameter sink: where a network's declaration sends each parameter it declares.
//
// Every network (CLIP text encoder, UNet, VAE encoder and decoder) is declared once, by its
// constructor: each block asks the sink for its parameters by their diffusers / transformers name,
// with the PyTorch shape its config implies, how the backend lays the tensor out (WeightKind) and
// how make-model initialises it (ParamInit, fan-in). What happens to the request is the sink's:
//
//   LoadingSink  fetches the tensor from a WeightSource and uploads it (the WeightLoader's checks:
//                missing, mis-shaped, unreadable and unexpected tensors, all named at finish());
//   ListingSink  records a ParamSpec and returns an undefined tensor, so constructing a model on it
//                gives the model's parameter list (make-model's files, `inspect`'s counts) without
//                touching a backend.
//
// So the forward pass, the weight names and shapes, make-model and inspect cannot disagree.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/weights.h"

namespace sdmpi {

// How make-model initialises a parameter (PyTorch's defaults; see make_model.h).
enum class ParamInit : uint8_t { Weight, Bias, NormWeight, NormBias, Embedding };

// One parameter as diffusers / transformers register it: name, PyTorch shape, init, fan-in.
struct ParamSpec {
  std::string name;
  Shape shape;
  ParamInit init = ParamInit::Weight;
  int64_t fan_in = 1;
};

int64_t count_parameters(const std::vector<ParamSpec>& params);

class ParamSink {
 public:
  virtual ~ParamSink() = default;
  // The parameter `name` with PyTorch shape `shape` (e.g. conv [out, in, kh, kw]). A loading sink
  // returns it uploaded for `kind`, or an undefined tensor after noting a problem; a listing sink
  // always returns an undefined tensor.
  virtual Tensor param(const std::string& name, const Shape& shape, WeightKind kind, ParamInit init,
                       int64_t fan_in) = 0;
  // Tensors a weight file may carry that this declaration does not use (the VAE encoder when only
  // the decoder is built, CLIP's position_ids buffer): no effect on a listing.
  virtual void ignore_prefix(const std::string& prefix) = 0;
  virtual void ignore(const std::string& name) = 0;
};

// Loads each declared parameter from `source` onto `backend` (WeightLoader's behaviour and
// messages); finish() throws one InputError naming every problem of the component.
class LoadingSink final : public ParamSink {
 public:
  LoadingSink(const WeightSource& source, Backend& backend, std::string component,
              std::optional<DType> model_dtype = std::nullopt)
      : loader_(source, backend, std::move(component), model_dtype) {}
  Tensor param(const std::string& name, const Shape& shape, WeightKind kind, ParamInit,
               int64_t) override {
    return loader_.load(name, shape, kind);
  }
  void ignore_prefix(const std::string& prefix) override { loader_.ignore_prefix(prefix); }
  void ignore(const std::string& name) override { loader_.ignore(name); }
  void finish() { loader_.finish(); }

 private:
  WeightLoader loader_;
};

// Records each declared parameter, in declaration order.
class ListingSink final : public ParamSink {
 public:
  Tensor param(const std::string& name, const Shape& shape, WeightKind, ParamInit init,
               int64_t fan_in) override {
    params_.push_back(ParamSpec{name, shape, init, fan_in});
    return Tensor();
  }
  void ignore_prefix(const std::string&) override {}
  void ignore(const std::string&) override {}
  const std::vector<ParamSpec>& params() const { return params_; }
  std::vector<ParamSpec> take() { return std::move(params_); }

 private:
  std::vector<ParamSpec> params_;
};

}  // namespace sdmpi

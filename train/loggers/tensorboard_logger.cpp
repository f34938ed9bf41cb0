// TensorBoardLogger: the run folder, the event file's name, hparams flattening and the order of
// the summaries Lightning writes.
#include "train/loggers/tensorboard_logger.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <filesystem>

#include "tensor/error.h"

namespace kiln {
namespace {

constexpr const char* kWho = "TensorBoardLogger";

// events.out.tfevents.<10-digit unix time>.<host>.<pid>.<n>: the name torch's SummaryWriter
// gives, n counting the files this process opened so two in the same second stay distinct.
std::string event_file_name() {
  static std::atomic<int64_t> files_opened{0};
  char host[256] = "localhost";
  if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "localhost");
  host[sizeof host - 1] = '\0';
  char name[400];
  std::snprintf(name, sizeof name, "events.out.tfevents.%010lld.%s.%lld.%lld", static_cast<long long>(std::time(nullptr)),
                host, static_cast<long long>(getpid()), static_cast<long long>(files_opened++));
  return name;
}

void flatten_into(const Json& value, const std::string& key, std::vector<std::pair<std::string, tfevents::HParamValue>>& out) {
  using Kind = tfevents::HParamValue::Kind;
  if (value.is_object() && !value.empty()) {
    for (const auto& [child, child_value] : value.items()) flatten_into(child_value, key.empty() ? child : key + "/" + child, out);
    return;
  }
  tfevents::HParamValue v;
  if (value.is_boolean()) {
    v.kind = Kind::boolean;
    v.flag = value.get<bool>();
  } else if (value.is_number()) {
    v.kind = Kind::number;
    v.number = value.get<double>();
  } else {
    v.kind = Kind::string;
    v.text = value.is_string() ? value.get<std::string>() : value.dump();  // arrays, null, {}: their JSON text
  }
  out.emplace_back(key, std::move(v));
}

tfevents::SessionStatus session_status(const std::string& status) {
  if (status == "success") return tfevents::SessionStatus::success;
  if (status == "failed") return tfevents::SessionStatus::failure;
  return tfevents::SessionStatus::unknown;
}

}  // namespace

std::vector<std::pair<std::string, tfevents::HParamValue>> flatten_hparams(const Json& params) {
  KILN_CHECK(params.is_object(), kWho, ".log_hyperparams: expected a JSON object, got ", params.type_name());
  std::vector<std::pair<std::string, tfevents::HParamValue>> out;
  for (const auto& [key, value] : params.items()) flatten_into(value, key, out);
  return out;
}

TensorBoardLogger::TensorBoardLogger(TensorBoardLoggerOptions options) : options_(std::move(options)) {
  run_ = resolve_run_folder(options_.root_dir, options_.name, options_.version);
}

TensorBoardLogger::~TensorBoardLogger() {
  if (!events_ && !hparams_dirty_) return;
  try {
    save();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: %s\n", e.what());
  }
}

tfevents::EventFileWriter& TensorBoardLogger::events() {
  if (!events_) {
    make_dirs(run_.path, kWho);
    event_file_path_ = (std::filesystem::path(run_.path) / event_file_name()).string();
    events_ = std::make_unique<tfevents::EventFileWriter>(event_file_path_);
  }
  return *events_;
}

void TensorBoardLogger::log_hyperparams(const Json& params) {
  std::map<std::string, double> metrics;
  if (options_.default_hp_metric) metrics["hp_metric"] = -1;
  log_hyperparams(params, metrics);
}

void TensorBoardLogger::log_hyperparams(const Json& params, const std::map<std::string, double>& metrics) {
  const auto flat = flatten_hparams(params);
  hparams_.update(params);
  hparams_dirty_ = true;
  if (metrics.empty()) return;  // Lightning writes the hparams summaries only with metrics to show
  std::vector<std::string> metric_tags;
  for (const auto& [name, value] : metrics) metric_tags.push_back(options_.prefix.empty() ? name : options_.prefix + "-" + name);
  log_metrics(metrics, 0);
  const double now = tfevents::wall_time_now();
  events().add_event(tfevents::hparams_experiment_event(now, flat, metric_tags));
  events().add_event(tfevents::hparams_session_start_event(now, flat));
  hparams_logged_ = true;
}

void TensorBoardLogger::log_metrics(const std::map<std::string, double>& metrics, int64_t step) {
  std::vector<std::pair<std::string, float>> scalars;
  scalars.reserve(metrics.size());
  for (const auto& [name, value] : metrics)
    scalars.emplace_back(options_.prefix.empty() ? name : options_.prefix + "-" + name, static_cast<float>(value));
  events().add_event(tfevents::scalars_event(tfevents::wall_time_now(), step, scalars));
}

void TensorBoardLogger::save() {
  if (events_) events_->flush();
  if (hparams_dirty_ || !hparams_written_) {
    make_dirs(run_.path, kWho);
    write_file_atomically((std::filesystem::path(run_.path) / "hparams.yaml").string(), hparams_to_yaml(hparams_), kWho);
    hparams_dirty_ = false;
    hparams_written_ = true;
  }
}

void TensorBoardLogger::finalize(const std::string& status) {
  if (!events_ && !hparams_dirty_) return;  // nothing was logged: leave no empty run folder behind
  if (hparams_logged_) {
    events().add_event(tfevents::hparams_session_end_event(tfevents::wall_time_now(), session_status(status)));
    hparams_logged_ = false;
  }
  save();
  if (events_) {
    events_->close();
    events_.reset();
  }
}

}  // namespace kiln

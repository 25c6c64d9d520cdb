// The `cxr serve` JSON API against a tiny trained run: every endpoint, every
// error status, the token, the queue and the deadline, and predictions equal
// to `cxr predict` on the same files. Loopback only; every server has
// exit_after as a safety net and is stopped at the end of its test.
#ifdef CXR_TEST_SERVE
#include <httplib.h>

#include <condition_variable>
#include <fstream>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/data/image_io.h"
#include "cxr/evaluate/evaluate.h"
#include "cxr/infer/predictor.h"
#include "cxr/serve/server.h"
#include "cxr/train/run.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using cxr::serve::ServeOptions;
using cxr::serve::Server;
using cxr::testing::TempDir;

/// One tiny run for the whole suite (trained once, evaluated on test so
/// /models has test metrics).
class ServeApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    cxr::testing::make_tiny_dataset(*dir_ / "data");
    auto o = cxr::testing::tiny_run_options(dir_->path(), "run");
    cxr::train::train_run(o);
    run_ = o.out_dir;
    cxr::evaluate::EvalOptions e;
    e.run_dir = run_;
    e.bootstrap = 100;
    e.device = "cpu";
    cxr::evaluate::evaluate_run(e);
    // Two test images, one per class.
    a_ = (*dir_ / "data" / "test" / "COVID").string();
    b_ = (*dir_ / "data" / "test" / "Normal").string();
    a_ = fs::directory_iterator(a_)->path().string();
    b_ = fs::directory_iterator(b_)->path().string();
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static ServeOptions options() {
    ServeOptions o;
    o.runs = {run_};
    o.port = 0;
    o.exit_after_s = 60;  // safety net: no test may leave a server behind
    return o;
  }
  static std::string read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  static TempDir* dir_;
  static std::string run_, a_, b_;
};
TempDir* ServeApi::dir_ = nullptr;
std::string ServeApi::run_, ServeApi::a_, ServeApi::b_;

/// A server on a free loopback port, serving in a thread until destroyed.
class Running {
 public:
  explicit Running(const ServeOptions& o) : server_(o) {
    port_ = server_.bind();
    thread_ = std::thread([this] { server_.run(); });
  }
  ~Running() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port_);
    c->set_read_timeout(30, 0);
    return c;
  }

 private:
  Server server_;
  int port_ = 0;
  std::thread thread_;
};

json body_of(const httplib::Result& r) {
  EXPECT_TRUE(r) << "no response";
  if (!r) return nullptr;
  return json::parse(r->body, nullptr, false);
}

/// Asserts an error answer: the status and a one-line {"error"} naming
/// `needle`.
void expect_error(const httplib::Result& r,
                  int status,
                  const std::string& needle) {
  ASSERT_TRUE(r) << "no response, expected " << status;
  EXPECT_EQ(r->status, status) << r->body;
  const json j = json::parse(r->body, nullptr, false);
  ASSERT_TRUE(j.is_object() && j.contains("error") && j["error"].is_string())
      << r->body;
  const std::string msg = j["error"];
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_NE(msg.find(needle), std::string::npos) << msg;
}

std::vector<unsigned char> from_data_url(const std::string& url) {
  const std::string prefix = "data:image/png;base64,";
  EXPECT_EQ(url.rfind(prefix, 0), 0u);
  static const std::string k =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::vector<unsigned char> out;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = prefix.size(); i < url.size() && url[i] != '='; ++i) {
    acc = (acc << 6) | static_cast<uint32_t>(k.find(url[i]));
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<unsigned char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

TEST_F(ServeApi, HealthAndModelsDescribeTheRun) {
  Running s(options());
  auto c = s.client();
  json h = body_of(c->Get("/api/v1/health"));
  EXPECT_EQ(h["status"], "ok");
  EXPECT_EQ(h["models"], 1);
  EXPECT_EQ(h["queue"]["waiting"], 0);
  EXPECT_EQ(h["queue"]["capacity"], 16);

  const auto pred = cxr::infer::Predictor::load(run_, torch::kCPU);
  json m = body_of(c->Get("/api/v1/models"));
  ASSERT_EQ(m["models"].size(), 1u);
  const json& x = m["models"][0];
  EXPECT_EQ(x["id"], "run");
  EXPECT_EQ(x["arch"], pred.config().model.arch);
  EXPECT_EQ(x["input_size"], 16);
  EXPECT_NEAR(x["threshold"].get<double>(), pred.calibrated_threshold(), 1e-12);
  EXPECT_EQ(x["calibrated"], pred.config().calibration.method != "none");
  EXPECT_EQ(x["has_detector"], pred.has_detector());
  EXPECT_EQ(x["positive"], "COVID");
  EXPECT_EQ(x["negative"], "Normal");
  // Evaluated on test at the run's threshold: the numbers of metrics.json.
  const json metrics =
      cxr::read_json(fs::path(run_) / "eval-test" / "metrics.json");
  ASSERT_TRUE(x["test"].is_object()) << x.dump();
  EXPECT_EQ(x["test"]["sensitivity"], metrics["recall"]["value"]);
  EXPECT_EQ(x["test"]["specificity"], metrics["specificity"]["value"]);
  EXPECT_EQ(x["test"]["n"], 12);
  ASSERT_TRUE(x["card"].is_string());
  EXPECT_EQ(x["card"].get<std::string>(),
            read((fs::path(run_) / "model-card.md").string()));
}

TEST_F(ServeApi, RepeatedFolderNamesGetDistinctIds) {
  auto o = options();
  o.runs = {run_, run_ + "/", run_};
  Running s(o);
  json m = body_of(s.client()->Get("/api/v1/models"));
  ASSERT_EQ(m["models"].size(), 3u);
  EXPECT_EQ(m["models"][0]["id"], "run");
  EXPECT_EQ(m["models"][1]["id"], "run-2");
  EXPECT_EQ(m["models"][2]["id"], "run-3");
  json p = body_of(s.client()->Post("/api/v1/predict?model=run-3&name=a.png",
                                    read(a_), "image/png"));
  EXPECT_EQ(p["model"], "run-3");
}

TEST_F(ServeApi, PredictionsEqualCxrPredict) {
  TempDir out;
  const std::string json_path = (out / "p.json").string();
  std::string log;
  ASSERT_EQ(cxr::testing::run_command(
                std::string(CXR_BINARY) + " predict " + run_ + " " + a_ + " " +
                    b_ + " --device cpu --json " + json_path + " 2>&1",
                &log),
            0)
      << log;
  const json cli = cxr::read_json(json_path)["predictions"];
  ASSERT_EQ(cli.size(), 2u);
  auto expect_same = [](const json& r, const json& ref) {
    ASSERT_FALSE(r.contains("error")) << r.dump();
    EXPECT_NEAR(r["p"].get<double>(), ref["p_COVID"].get<double>(), 1e-6);
    EXPECT_NEAR(r["p_raw"].get<double>(), ref["p_COVID_raw"].get<double>(),
                1e-6);
    EXPECT_EQ(r["decision"], ref["decision"]);
    EXPECT_EQ(r["positive"], ref["decision"] == "COVID");
    EXPECT_EQ(r["in_distribution"], ref["in_distribution"]);
    EXPECT_EQ(r["reasons"].size(), ref["ood_reasons"].size());
    if (ref["ood_score"].is_null()) {
      EXPECT_TRUE(r["ood_score"].is_null());
    } else {
      // The detector's distance is float32 arithmetic over up to 2560
      // features; with OpenBLAS the GEMM blocking (and so the rounding)
      // depends on the batch: the server scores one image per request, the
      // CLI both files in one batch. 1e-5 relative is float32 precision;
      // a wrong image or layer differs by far more.
      EXPECT_NEAR(
          r["ood_score"].get<double>(), ref["ood_score"].get<double>(),
          1e-5 * std::max(1.0, std::abs(ref["ood_score"].get<double>())));
    }
  };

  Running s(options());
  auto c = s.client();
  // Raw body, one image.
  auto r = c->Post("/api/v1/predict?name=a.png", read(a_), "image/png");
  json j = body_of(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(j["model"], "run");
  ASSERT_EQ(j["results"].size(), 1u);
  EXPECT_EQ(j["results"][0]["name"], "a.png");
  EXPECT_EQ(j["results"][0]["width"], 12);
  EXPECT_EQ(j["results"][0]["format"], "png");
  EXPECT_NEAR(j["results"][0]["threshold"].get<double>(),
              cxr::read_json(json_path)["threshold"].get<double>(), 1e-12);
  EXPECT_FALSE(j["results"][0].contains("maps"));
  EXPECT_FALSE(j["results"][0].contains("preview"));
  expect_same(j["results"][0], cli[0]);

  // Multipart, both images, in order.
  httplib::MultipartFormDataItems items = {
      {"file", read(a_), "a.png", "image/png"},
      {"file", read(b_), "b.png", "image/png"}};
  r = c->Post("/api/v1/predict", items);
  j = body_of(r);
  ASSERT_EQ(r->status, 200) << r->body;
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_EQ(j["results"][0]["name"], "a.png");
  EXPECT_EQ(j["results"][1]["name"], "b.png");
  expect_same(j["results"][0], cli[0]);
  expect_same(j["results"][1], cli[1]);
  // The logit is the Predictor's.
  const auto pred = cxr::infer::Predictor::load(run_, torch::kCPU);
  const auto ref = pred.predict({cxr::data::read_gray(a_)});
  EXPECT_NEAR(j["results"][0]["logit"].get<double>(), ref[0].logit, 1e-6);
}

TEST_F(ServeApi, MapsAndPreviewArePngs) {
  Running s(options());
  auto r = s.client()->Post("/api/v1/predict?maps=1&preview=1&name=a.png",
                            read(a_), "application/octet-stream");
  json j = body_of(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json& x = j["results"][0];
  ASSERT_TRUE(x.contains("maps")) << x.dump().substr(0, 300);
  for (const char* which : {"positive", "negative"}) {
    const auto png = from_data_url(x["maps"][which]);
    const auto img = cxr::data::decode_gray(png, which);
    EXPECT_EQ(img.info.width, 16) << which;  // the model's input size
    EXPECT_EQ(img.info.height, 16) << which;
  }
  EXPECT_EQ(x["maps"]["encoding"], "gray");
  const auto preview =
      cxr::data::decode_gray(from_data_url(x["preview"]), "preview");
  EXPECT_EQ(preview.info.width, 12);
  EXPECT_EQ(preview.info.height, 12);
  // The decoded image itself (8-bit PNG of the gray pixels).
  const auto orig = cxr::data::read_gray(a_);
  EXPECT_LT((preview.pixels - orig.pixels).abs().max().item<float>(),
            1.0f / 255 + 1e-6f);
}

TEST_F(ServeApi, PreviewOfALargeImageIsAtMost1024Px) {
  Running s(options());
  torch::manual_seed(3);
  const auto png = cxr::data::encode_png(torch::rand({1000, 2000}));
  auto r = s.client()->Post("/api/v1/predict?preview=1&name=wide.png",
                            std::string(png.begin(), png.end()), "image/png");
  json j = body_of(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 300);
  const json& x = j["results"][0];
  EXPECT_EQ(x["width"], 2000);
  EXPECT_EQ(x["height"], 1000);
  const auto preview =
      cxr::data::decode_gray(from_data_url(x["preview"]), "preview");
  EXPECT_EQ(preview.info.width, 1024);
  EXPECT_EQ(preview.info.height, 512);
}

TEST_F(ServeApi, ABatchWhereEveryFileFailsIs422) {
  Running s(options());
  httplib::MultipartFormDataItems bad = {
      {"file", "not an image", "x.png", "image/png"},
      {"file", "nor this", "y.jpg", "image/jpeg"}};
  expect_error(s.client()->Post("/api/v1/predict", bad), 422, "x.png");
}

TEST_F(ServeApi, ErrorStatusesHaveOneLineJsonBodies) {
  auto o = options();
  o.max_body_bytes = 4000;
  Running s(o);
  auto c = s.client();
  const std::string png = read(a_);
  ASSERT_LT(png.size(), 4000u);

  // 400: no file part, empty body.
  httplib::MultipartFormDataItems other = {
      {"image", png, "a.png", "image/png"}};
  expect_error(c->Post("/api/v1/predict", other), 400, "'file'");
  expect_error(c->Post("/api/v1/predict", "", "image/png"), 400, "empty");
  // 404: unknown model, unknown path.
  expect_error(c->Post("/api/v1/predict?model=nope", png, "image/png"), 404,
               "nope");
  expect_error(c->Get("/api/v1/nothing"), 404, "/api/v1/nothing");
  // 405: wrong method.
  auto r = c->Get("/api/v1/predict");
  expect_error(r, 405, "POST");
  EXPECT_EQ(r->get_header_value("Allow"), "POST");
  expect_error(c->Post("/api/v1/models", "x", "text/plain"), 405, "GET");
  // 413: body over max_body_bytes.
  expect_error(c->Post("/api/v1/predict", std::string(5000, 'x'), "image/png"),
               413, "--max-body-mb");
  // 415: content type.
  expect_error(c->Post("/api/v1/predict", png, "text/plain"), 415,
               "text/plain");
  // 422: not a decodable image (a PNG cut short), named in the message.
  expect_error(c->Post("/api/v1/predict?name=cut.png",
                       png.substr(0, png.size() / 2), "image/png"),
               422, "cut.png");
  // A client's file name cannot break the one-line error.
  expect_error(
      c->Post("/api/v1/predict?name=two%0Alines.png", "junk", "image/png"), 422,
      "two");
  // A batch with one bad file: 200, the error on that file only.
  httplib::MultipartFormDataItems mixed = {
      {"file", "not an image", "bad.png", "image/png"},
      {"file", png, "a.png", "image/png"}};
  r = c->Post("/api/v1/predict", mixed);
  json j = body_of(r);
  ASSERT_EQ(r->status, 200) << r->body;
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_NE(j["results"][0]["error"].get<std::string>().find("bad.png"),
            std::string::npos);
  EXPECT_FALSE(j["results"][1].contains("error"));
  EXPECT_TRUE(j["results"][1]["p"].is_number());
  // Still serving after all that.
  EXPECT_EQ(body_of(c->Get("/api/v1/health"))["status"], "ok");
}

TEST_F(ServeApi, ImagesOverThePixelLimitAre413) {
  auto o = options();
  o.limits.max_pixels = 100;  // the 12 x 12 test images have 144
  Running s(o);
  expect_error(
      s.client()->Post("/api/v1/predict?name=a.png", read(a_), "image/png"),
      413, "a.png");
}

TEST_F(ServeApi, TokenGuardsTheApiButNotHealthOrThePage) {
  auto o = options();
  o.token = "s3cret-token";
  Running s(o);
  auto c = s.client();
  expect_error(c->Get("/api/v1/models"), 401, "token");
  expect_error(c->Get("/api/v1/models?token=s3cret-tokeN"), 401, "token");
  expect_error(s.client()->Post("/api/v1/predict", read(a_), "image/png"), 401,
               "Bearer");
  EXPECT_EQ(s.client()->Get("/api/v1/models?token=s3cret-token")->status, 200);
  auto b = s.client();
  b->set_bearer_token_auth("s3cret-token");
  EXPECT_EQ(b->Get("/api/v1/models")->status, 200);
  EXPECT_EQ(b->Post("/api/v1/predict", read(a_), "image/png")->status, 200);
  b->set_bearer_token_auth("wrong");
  EXPECT_EQ(b->Get("/api/v1/models")->status, 401);
  EXPECT_EQ(s.client()->Get("/api/v1/health")->status, 200);
  EXPECT_EQ(s.client()->Get("/")->status, 200);
}

TEST_F(ServeApi, NonLoopbackHostNeedsAToken) {
  auto o = options();
  o.host = "0.0.0.0";
  EXPECT_NE(cxr::testing::error_of<cxr::ConfigError>([&] {
              Server s(o);
              s.bind();
            }).find("--token"),
            std::string::npos);
  std::string log;
  const int rc = cxr::testing::run_command(
      std::string(CXR_BINARY) + " serve " + run_ +
          " --host 0.0.0.0 --port 0 --exit-after 5 2>&1",
      &log);
  EXPECT_EQ(rc, 2) << log;
  EXPECT_NE(log.find("cxr: error: binding to 0.0.0.0 exposes the model to "
                     "the network; pass --token"),
            std::string::npos)
      << log;
  EXPECT_TRUE(cxr::serve::is_loopback("127.0.0.1"));
  EXPECT_TRUE(cxr::serve::is_loopback("::1"));
  EXPECT_TRUE(cxr::serve::is_loopback("localhost"));
  EXPECT_FALSE(cxr::serve::is_loopback("192.168.1.2"));
  EXPECT_FALSE(cxr::serve::is_loopback("::"));
}

TEST_F(ServeApi, BusyPortAndBadRunAreRefused) {
  Running s(options());
  auto o = options();
  o.port = s.port();
  const std::string msg = cxr::testing::error_of<cxr::IoError>([&] {
    Server t(o);
    t.bind();
  });
  EXPECT_NE(msg.find("127.0.0.1:" + std::to_string(s.port())),
            std::string::npos)
      << msg;
  o = options();
  o.runs = {(dir_->path() / "nope").string()};
  EXPECT_NE(cxr::testing::error_of<cxr::ModelError>([&] {
              Server t(o);
              t.bind();
            }).find("nope"),
            std::string::npos);
}

/// Holds the worker inside before_job until released.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  int entered = 0;
  bool open = false;
  void hold() {
    std::unique_lock<std::mutex> lock(mu);
    ++entered;
    cv.notify_all();
    cv.wait(lock, [&] { return open; });
  }
  void wait_entered(int n) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return entered >= n; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu);
    open = true;
    cv.notify_all();
  }
};

/// Opens the gate when a test ends early, so the server can stop.
struct Releaser {
  Gate& gate;
  ~Releaser() { gate.release(); }
};

TEST_F(ServeApi, FullQueueIs503WithRetryAfter) {
  Gate gate;
  auto o = options();
  o.queue_capacity = 1;
  o.before_job = [&] { gate.hold(); };
  Running s(o);
  Releaser releaser{gate};  // before the server stops, whatever fails
  const std::string png = read(a_);
  auto post = [&] {
    return s.client()->Post("/api/v1/predict", png, "image/png")->status;
  };
  auto first = std::async(std::launch::async, post);
  gate.wait_entered(1);  // the worker holds the first request
  auto second = std::async(std::launch::async, post);
  // The second waits in the queue.
  for (int i = 0; i < 1000; ++i) {
    json h = body_of(s.client()->Get("/api/v1/health"));
    if (h["queue"]["waiting"] == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(body_of(s.client()->Get("/api/v1/health"))["queue"]["waiting"], 1);
  auto r = s.client()->Post("/api/v1/predict", png, "image/png");
  expect_error(r, 503, "--queue");
  EXPECT_EQ(r->get_header_value("Retry-After"), "1");
  gate.release();
  EXPECT_EQ(first.get(), 200);
  EXPECT_EQ(second.get(), 200);
}

TEST_F(ServeApi, MissedDeadlineIs504) {
  Gate gate;
  auto o = options();
  o.deadline_s = 0.2;
  o.before_job = [&] { gate.hold(); };
  Running s(o);
  Releaser releaser{gate};
  // The worker is held until the answer has come, so the deadline passes
  // whatever the machine's speed.
  expect_error(s.client()->Post("/api/v1/predict", read(a_), "image/png"), 504,
               "--deadline");
  gate.release();
}

TEST_F(ServeApi, PageIsServedWithTheDomContract) {
  Running s(options());
  auto c = s.client();
  auto r = c->Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type").rfind("text/html", 0), 0u);
  for (const char* id :
       {"id=\"file-input\"", "id=\"model-select\"", "id=\"status\"",
        "id=\"export-csv\"", "id=\"export-json\"", "id=\"detail\"",
        "id=\"detail-image\"", "id=\"overlay\"", "id=\"map-toggle\"",
        "id=\"opacity\"", "multiple"}) {
    EXPECT_NE(r->body.find(id), std::string::npos) << id;
  }
  r = c->Get("/app.js");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type").rfind("text/javascript", 0),
            0u);
  // The page draws rows with the attributes the browser test reads.
  for (const char* s : {"data-state", "data-p", "data-ood", "/api/v1/predict",
                        "/api/v1/models", "token"}) {
    EXPECT_NE(r->body.find(s), std::string::npos) << s;
  }
  EXPECT_EQ(c->Get("/style.css")->status, 200);
}

TEST_F(ServeApi, CliPrintsTheListeningLineAndStopsOnSigterm) {
  TempDir t;
  const std::string log = (t / "log").string();
  // Start in the background, wait for the line, SIGTERM, and report whether
  // it ended within 20 s (exit-after 60 is only the safety net).
  const std::string cmd =
      std::string(CXR_BINARY) + " serve " + run_ + " " + run_ +
      " --port 0 --exit-after 60 > " + log + " 2>&1 & pid=$!; " +
      "for i in $(seq 300); do grep -q listening " + log +
      " && break; sleep 0.1; done; kill -TERM $pid; " +
      "for i in $(seq 200); do kill -0 $pid 2>/dev/null || break; sleep 0.1; "
      "done; if kill -0 $pid 2>/dev/null; then echo STILL-RUNNING; kill -9 "
      "$pid; fi; wait $pid; echo rc=$?";
  std::string out;
  cxr::testing::run_command(cmd, &out);
  EXPECT_EQ(out.find("STILL-RUNNING"), std::string::npos) << out;
  EXPECT_NE(out.find("rc=0"), std::string::npos) << out;
  const std::string text = read(log);
  const std::string head = "cxr serve: listening on http://127.0.0.1:";
  ASSERT_EQ(text.rfind(head, 0), 0u) << text;
  const std::string line = text.substr(0, text.find('\n'));
  EXPECT_GT(std::stoi(line.substr(head.size())), 0) << line;
  EXPECT_NE(line.find("/ (models: run, run-2)"), std::string::npos) << line;
}

}  // namespace
#endif  // CXR_TEST_SERVE

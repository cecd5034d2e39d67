#include "k8s/kube_client.h"

#include <curl/curl.h>

#include <fstream>
#include <mutex>
#include <sstream>

#include "ip_address.h"
#include "json_fields.h"

namespace ambient::k8s {

namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using Curl = std::unique_ptr<CURL, CurlDeleter>;
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

// Common TLS and auth settings. `headers` must outlive the transfer.
Result<Curl> make_handle(const KubeConfig& cfg, const std::string& path, Slist& headers) {
  global_init();
  Curl c(curl_easy_init());
  if (!c) return make_error(Errc::Internal, "curl_easy_init failed");
  std::string url = cfg.server + path;
  curl_easy_setopt(c.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(c.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c.get(), CURLOPT_CONNECTTIMEOUT_MS, 5000L);
  curl_easy_setopt(c.get(), CURLOPT_USERAGENT, "ambient-agent");
  if (cfg.insecure) {
    curl_easy_setopt(c.get(), CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c.get(), CURLOPT_SSL_VERIFYHOST, 0L);
  } else if (!cfg.ca_data.empty()) {
    curl_blob blob{const_cast<char*>(cfg.ca_data.data()), cfg.ca_data.size(), CURL_BLOB_COPY};
    curl_easy_setopt(c.get(), CURLOPT_CAINFO_BLOB, &blob);
  } else if (!cfg.ca_file.empty()) {
    curl_easy_setopt(c.get(), CURLOPT_CAINFO, cfg.ca_file.c_str());
  }
  if (!cfg.client_cert_data.empty()) {
    curl_blob cert{const_cast<char*>(cfg.client_cert_data.data()), cfg.client_cert_data.size(),
                   CURL_BLOB_COPY};
    curl_blob key{const_cast<char*>(cfg.client_key_data.data()), cfg.client_key_data.size(),
                  CURL_BLOB_COPY};
    curl_easy_setopt(c.get(), CURLOPT_SSLCERT_BLOB, &cert);
    curl_easy_setopt(c.get(), CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(c.get(), CURLOPT_SSLKEY_BLOB, &key);
    curl_easy_setopt(c.get(), CURLOPT_SSLKEYTYPE, "PEM");
  }
  std::string token = cfg.token_file.empty() ? cfg.token : trim(read_file(cfg.token_file));
  curl_slist* h = headers.release();
  h = curl_slist_append(h, "Accept: application/json");
  if (!token.empty()) h = curl_slist_append(h, ("Authorization: Bearer " + token).c_str());
  headers.reset(h);
  curl_easy_setopt(c.get(), CURLOPT_HTTPHEADER, headers.get());
  return c;
}

size_t append_body(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

Error curl_error(const KubeConfig& cfg, const std::string& path, CURLcode rc, const char* detail) {
  std::string msg = std::string(detail && *detail ? detail : curl_easy_strerror(rc));
  return make_error(rc == CURLE_OPERATION_TIMEDOUT ? Errc::Timeout : Errc::Unavailable,
                    "kubernetes API " + cfg.server + path + ": " + msg);
}

}  // namespace

Result<KubeConfig> in_cluster_config(const std::function<const char*(const char*)>& getenv,
                                     const std::string& sa_dir) {
  const char* host = getenv("KUBERNETES_SERVICE_HOST");
  const char* port = getenv("KUBERNETES_SERVICE_PORT");
  if (!host || !port || !*host || !*port) {
    return make_error(
        Errc::NotFound,
        "not in a cluster: KUBERNETES_SERVICE_HOST/PORT unset and no kubeconfig given");
  }
  std::string h = host;
  if (h.find(':') != std::string::npos) h = "[" + h + "]";
  KubeConfig cfg;
  cfg.server = "https://" + h + ":" + port;
  cfg.ca_file = sa_dir + "/ca.crt";
  cfg.token_file = sa_dir + "/token";
  return cfg;
}

KubeClient::KubeClient(KubeConfig cfg) : cfg_(std::move(cfg)) { global_init(); }
KubeClient::~KubeClient() = default;

Result<HttpResult> KubeClient::request(std::string_view method, const std::string& path,
                                       const std::string& body, std::string_view content_type,
                                       std::chrono::milliseconds timeout) const {
  Slist headers;
  if (!content_type.empty()) {
    headers.reset(
        curl_slist_append(nullptr, ("Content-Type: " + std::string(content_type)).c_str()));
  }
  AMBIENT_ASSIGN_OR_RETURN(Curl c, make_handle(cfg_, path, headers));
  HttpResult out;
  std::string m(method);
  curl_easy_setopt(c.get(), CURLOPT_CUSTOMREQUEST, m.c_str());
  if (!body.empty() || m == "POST" || m == "PATCH" || m == "PUT") {
    curl_easy_setopt(c.get(), CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  curl_easy_setopt(c.get(), CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(c.get(), CURLOPT_WRITEFUNCTION, append_body);
  curl_easy_setopt(c.get(), CURLOPT_WRITEDATA, &out.body);
  char err[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(c.get(), CURLOPT_ERRORBUFFER, err);
  CURLcode rc = curl_easy_perform(c.get());
  if (rc != CURLE_OK) return curl_error(cfg_, path, rc, err);
  curl_easy_getinfo(c.get(), CURLINFO_RESPONSE_CODE, &out.status);
  return out;
}

namespace {
struct StreamState {
  const std::function<bool(std::string_view)>* on_line;
  const std::atomic<bool>* stop;
  std::string pending;
  bool cancelled = false;
};

size_t on_stream_data(char* data, size_t size, size_t n, void* user) {
  auto* s = static_cast<StreamState*>(user);
  s->pending.append(data, size * n);
  size_t start = 0;
  for (size_t nl; (nl = s->pending.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::string_view line(s->pending.data() + start, nl - start);
    if (!line.empty() && !(*s->on_line)(line)) {
      s->cancelled = true;
      return 0;  // aborts the transfer
    }
  }
  s->pending.erase(0, start);
  return size * n;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* s = static_cast<StreamState*>(user);
  if (s->stop->load()) {
    s->cancelled = true;
    return 1;
  }
  return 0;
}
}  // namespace

Result<long> KubeClient::stream_lines(const std::string& path,
                                      const std::function<bool(std::string_view)>& on_line,
                                      const std::atomic<bool>& stop,
                                      std::chrono::seconds idle_timeout) const {
  Slist headers;
  AMBIENT_ASSIGN_OR_RETURN(Curl c, make_handle(cfg_, path, headers));
  StreamState st{&on_line, &stop, {}};
  curl_easy_setopt(c.get(), CURLOPT_WRITEFUNCTION, on_stream_data);
  curl_easy_setopt(c.get(), CURLOPT_WRITEDATA, &st);
  curl_easy_setopt(c.get(), CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c.get(), CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(c.get(), CURLOPT_XFERINFODATA, &st);
  // A watch is silent for long stretches only if the server died under us;
  // bookmarks and events keep a healthy one above one byte per window.
  curl_easy_setopt(c.get(), CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c.get(), CURLOPT_LOW_SPEED_TIME, static_cast<long>(idle_timeout.count()));
  char err[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(c.get(), CURLOPT_ERRORBUFFER, err);
  CURLcode rc = curl_easy_perform(c.get());
  long status = 0;
  curl_easy_getinfo(c.get(), CURLINFO_RESPONSE_CODE, &status);
  if (st.cancelled) return status;
  if (rc != CURLE_OK) return curl_error(cfg_, path, rc, err);
  if (!st.pending.empty()) on_line(st.pending);  // a last line without newline
  return status;
}

std::string api_error_message(const HttpResult& r) {
  auto j = json::Json::parse(r.body, nullptr, false);
  if (!j.is_discarded() && j.is_object() && j.contains("message") && j["message"].is_string()) {
    return "HTTP " + std::to_string(r.status) + ": " + j["message"].get<std::string>();
  }
  return "HTTP " + std::to_string(r.status) + ": " + r.body.substr(0, 200);
}

}  // namespace ambient::k8s

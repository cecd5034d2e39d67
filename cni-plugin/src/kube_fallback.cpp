#include "kube_fallback.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fstream>
#include <sstream>
#include <thread>

#include "ip_address.h"
#include "json_fields.h"
#include "kubeconfig.h"

namespace ambient::cni {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace http = boost::beast::http;

namespace {

std::string read_file(const std::string& path) {
  if (path.empty()) return "";
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

Result<std::unique_ptr<KubeconfigApi>> KubeconfigApi::load(const std::string& path) {
  AMBIENT_ASSIGN_OR_RETURN(k8s::KubeConfig cfg, k8s::load_kubeconfig(path));
  std::unique_ptr<KubeconfigApi> api(new KubeconfigApi());
  const std::string& server = cfg.server;
  if (server.rfind("https://", 0) != 0) {
    return make_error(Errc::InvalidArgument, "kubeconfig server must be https: " + server);
  }
  std::string hostport = server.substr(8);
  if (auto slash = hostport.find('/'); slash != std::string::npos) hostport.resize(slash);
  if (!hostport.empty() && hostport.front() == '[') {  // [v6]:port
    auto close = hostport.find(']');
    api->host_ = hostport.substr(1, close - 1);
    api->port_ = close + 1 < hostport.size() ? hostport.substr(close + 2) : "443";
  } else if (auto colon = hostport.rfind(':'); colon != std::string::npos) {
    api->host_ = hostport.substr(0, colon);
    api->port_ = hostport.substr(colon + 1);
  } else {
    api->host_ = hostport;
    api->port_ = "443";
  }
  api->insecure_ = cfg.insecure;
  api->ca_pem_ = !cfg.ca_data.empty() ? cfg.ca_data : read_file(cfg.ca_file);
  api->token_ = cfg.token_file.empty() ? cfg.token : read_file(cfg.token_file);
  while (!api->token_.empty() && (api->token_.back() == '\n' || api->token_.back() == '\r')) {
    api->token_.pop_back();
  }
  api->cert_pem_ = cfg.client_cert_data;
  api->key_pem_ = cfg.client_key_data;
  return api;
}

Result<HttpReply> KubeconfigApi::get(const std::string& path) {
  const std::string what = "GET https://" + host_ + ":" + port_ + path;
  asio::io_context ioc;
  ssl::context ctx(ssl::context::tls_client);
  boost::system::error_code ec;
  if (insecure_) {
    ctx.set_verify_mode(ssl::verify_none);
  } else {
    ctx.set_verify_mode(ssl::verify_peer);
    if (!ca_pem_.empty()) {
      ctx.add_certificate_authority(asio::buffer(ca_pem_), ec);
      if (ec) return make_error(Errc::InvalidArgument, "kubeconfig CA: " + ec.message());
    } else {
      ctx.set_default_verify_paths(ec);
    }
  }
  if (!cert_pem_.empty()) {
    ctx.use_certificate_chain(asio::buffer(cert_pem_), ec);
    if (!ec) ctx.use_private_key(asio::buffer(key_pem_), ssl::context::pem, ec);
    if (ec) return make_error(Errc::InvalidArgument, "kubeconfig client cert: " + ec.message());
  }
  boost::beast::ssl_stream<boost::beast::tcp_stream> stream(ioc, ctx);
  if (!insecure_) stream.set_verify_callback(ssl::host_name_verification(host_));
  // SNI only for names (RFC 6066 forbids IP literals).
  boost::system::error_code addr_ec;
  asio::ip::make_address(host_, addr_ec);
  if (addr_ec) SSL_set_tlsext_host_name(stream.native_handle(), host_.c_str());

  http::request<http::empty_body> req{http::verb::get, path, 11};
  req.set(http::field::host, host_);
  req.set(http::field::accept, "application/json");
  req.set(http::field::user_agent, "istio-cni");
  if (!token_.empty()) req.set(http::field::authorization, "Bearer " + token_);
  boost::beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.body_limit(4 << 20);
  boost::system::error_code result = asio::error::would_block;
  std::string step;

  asio::ip::tcp::resolver resolver(ioc);
  resolver.async_resolve(host_, port_, [&](auto rec, auto endpoints) {
    if (rec) {
      step = "resolve";
      result = rec;
      return;
    }
    boost::beast::get_lowest_layer(stream).async_connect(endpoints, [&](auto cec, auto) {
      if (cec) {
        step = "connect";
        result = cec;
        return;
      }
      stream.async_handshake(ssl::stream_base::client, [&](auto hec) {
        if (hec) {
          step = "TLS handshake";
          result = hec;
          return;
        }
        http::async_write(stream, req, [&](auto wec, size_t) {
          if (wec) {
            step = "write";
            result = wec;
            return;
          }
          http::async_read(stream, buf, parser, [&](auto rec2, size_t) {
            step = "read";
            result = rec2;
          });
        });
      });
    });
  });
  ioc.run_for(std::chrono::seconds(5));
  if (result == asio::error::would_block) {
    return make_error(Errc::Timeout, what + ": no answer within 5 s");
  }
  if (result) return make_error(Errc::Unavailable, what + ": " + step + ": " + result.message());
  auto res = parser.release();
  return HttpReply{.status = static_cast<int>(res.result_int()), .body = std::move(res.body())};
}

namespace {

Result<json::Json> get_object(KubeApi& api, const std::string& path) {
  AMBIENT_ASSIGN_OR_RETURN(HttpReply r, api.get(path));
  auto j = json::Json::parse(r.body, nullptr, false);
  if (r.status != 200) {
    std::string msg =
        !j.is_discarded() && j.is_object() && j.contains("message") && j["message"].is_string()
            ? j["message"].get<std::string>()
            : r.body.substr(0, 200);
    return make_error(r.status == 404 ? Errc::NotFound : Errc::Unavailable,
                      "GET " + path + ": HTTP " + std::to_string(r.status) + ": " + msg);
  }
  if (j.is_discarded() || !j.is_object()) {
    return make_error(Errc::Internal, "GET " + path + ": not a JSON object");
  }
  return j;
}

}  // namespace

Result<bool> is_ambient_pod(KubeApi& api, const std::string& ns, const std::string& name,
                            const std::vector<k8s::EnablementSelector>& selectors,
                            const DetectionOptions& opts) {
  Error last = make_error(Errc::Internal, "no attempt made");
  for (int i = 0; i < opts.attempts; ++i) {
    if (i) {
      if (opts.sleep)
        opts.sleep(opts.backoff);
      else
        std::this_thread::sleep_for(opts.backoff);
    }
    auto pod = get_object(api, "/api/v1/namespaces/" + ns + "/pods/" + name);
    if (!pod) {
      last = std::move(pod).error();
      continue;
    }
    auto nsobj = get_object(api, "/api/v1/namespaces/" + ns);
    if (!nsobj) {
      last = std::move(nsobj).error();
      continue;
    }
    return k8s::pod_matches(*pod, *nsobj, selectors);
  }
  return std::move(last).with("ambient detection for " + ns + "/" + name + " failed after " +
                              std::to_string(opts.attempts) + " attempts");
}

}  // namespace ambient::cni

// How ambientctl prints the admin API's answers: aligned tables for people,
// JSON and YAML for scripts. JSON and YAML carry every field of the
// message under its name in proto/admin.proto, defaults included, so a
// script sees the same keys whatever the values (docs/ambientctl.md#fields).
#pragma once

#include <string>
#include <vector>

#include <google/protobuf/message.h>
#include <nlohmann/json.hpp>

#include "admin.pb.h"

namespace ambient::ctl {

enum class Format { Table, Json, Yaml };

// Every field by its proto name; 64-bit integers as JSON numbers.
nlohmann::json to_json(const google::protobuf::Message& m);
// Block-style YAML of a JSON value; strings always double-quoted.
std::string to_yaml(const nlohmann::json& j);
// JSON (indented) or YAML of a message, newline-terminated.
std::string render_data(const google::protobuf::Message& m, Format f);

std::string status_table(const admin::v1::Status& s);
std::string pods_table(const admin::v1::ListPodsResponse& r);
std::string pod_table(const admin::v1::Pod& p);
std::string verify_table(const admin::v1::VerifyResponse& r);
std::string trace_table(const admin::v1::TraceResponse& r);
std::string event_line(const admin::v1::Event& e);

// Rows as columns padded to the widest cell, two spaces apart; the last
// column is not padded.
std::string align(const std::vector<std::vector<std::string>>& rows);

}  // namespace ambient::ctl

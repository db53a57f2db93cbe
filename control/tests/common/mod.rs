//! Helpers shared by control's integration tests: the operator's side of a control running
//! on `dir/state`.

use std::path::Path;

use serde_json::Value;
use sluice_control::admin::{call, AdminRequest};
use sluice_control::service::paths;

/// One request on control's admin socket.
pub fn admin(dir: &Path, request: AdminRequest) -> Result<Value, String> {
    call(&paths::admin_socket(&dir.join("state")), &request)
}

/// A ten-minute Sluice token for `user` in `groups`, minted by control.
pub fn token(dir: &Path, user: &str, groups: &[&str]) -> String {
    admin(
        dir,
        AdminRequest::Token {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ttl_ms: 600_000,
        },
    )
    .expect("mint")["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

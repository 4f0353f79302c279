//! The AWS CLI's shared files against the dev cluster's real RGW: keys, endpoint and region
//! from a profile alone, with no key or endpoint variable.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use objstore::{
    PutOptions, S3Config, S3Store, ENV_CONFIG_FILE, ENV_PROFILE, ENV_SHARED_CREDENTIALS_FILE,
};

use crate::support::{pattern, s3_config, unique};

/// Creates a bucket, puts an object, reads it back and removes both, through `config` only.
async fn put_and_get(config: &S3Config) {
    let store = S3Store::from_config(config).expect("S3 client from the profile");
    let bucket = unique("objstore-profile");
    store.create_bucket(&bucket).await.unwrap();
    let data = Bytes::from(pattern(100_000, 7));
    let result = async {
        store
            .put_object(&bucket, "obj", data.clone(), &PutOptions::default())
            .await?;
        store.get_object_bytes(&bucket, "obj").await
    }
    .await;
    store.empty_and_delete_bucket(&bucket).await.unwrap();
    assert_eq!(result.unwrap(), data);
}

/// Writes the dev cluster's endpoint and keys as a profile `name` of the AWS CLI's two files.
fn write_profile_files(dir: &Path, name: &str, credentials: &Path, config: &Path) {
    let cluster = s3_config();
    let section = |prefix: &str| {
        if name == "default" {
            "[default]".to_owned()
        } else {
            format!("[{prefix}{name}]")
        }
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        credentials,
        format!(
            "{}\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            section(""),
            cluster.access_key_id.as_deref().unwrap(),
            cluster.secret_access_key.as_deref().unwrap(),
        ),
    )
    .unwrap();
    std::fs::write(
        config,
        format!(
            "{}\nregion = {}\nendpoint_url = {}\n",
            section("profile "),
            cluster.region,
            cluster.endpoint.as_deref().unwrap(),
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn credentials_file_aws_profile_and_config_endpoint_alone_reach_rgw() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    let config = dir.path().join("config");
    write_profile_files(dir.path(), "rgw-test", &credentials, &config);
    // Only these three variables: no keys, no endpoint, no HOME.
    let vars: HashMap<&str, String> = [
        (ENV_PROFILE, "rgw-test".to_owned()),
        (
            ENV_SHARED_CREDENTIALS_FILE,
            credentials.display().to_string(),
        ),
        (ENV_CONFIG_FILE, config.display().to_string()),
    ]
    .into();
    let c = S3Config::from_lookup(|name| vars.get(name).cloned());
    assert_eq!(c.profile(), "rgw-test");
    assert_eq!(
        c.endpoint,
        s3_config().endpoint,
        "the endpoint comes from the file"
    );
    assert!(c.access_key_id.is_some(), "the keys come from the file");
    put_and_get(&c).await;
}

#[tokio::test]
async fn default_profile_in_home_reaches_rgw() {
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    write_profile_files(
        &aws,
        "default",
        &aws.join("credentials"),
        &aws.join("config"),
    );
    let home_path = home.path().display().to_string();
    let c = S3Config::from_lookup(|name| (name == "HOME").then(|| home_path.clone()));
    assert_eq!(c.endpoint, s3_config().endpoint);
    put_and_get(&c).await;
}

//! The master key in AWS KMS (Cargo feature `aws-kms`): tenant keys are wrapped with the KMS
//! `Encrypt` call and unwrapped with `Decrypt`, the associated data going as the encryption
//! context (KMS binds it to the ciphertext). Credentials and region come from the usual AWS
//! chain (environment, profile, instance role); `endpoint` points at another KMS-compatible
//! server (a VPC endpoint, LocalStack, moto).

pub use aws_config;
pub use aws_sdk_kms;
use aws_sdk_kms::primitives::Blob;
use base64::Engine;

use crate::crypto::{CryptoError, Kms};

/// Tags a wrapped key as AWS KMS's.
const TAG: &[u8] = b"aws:";

/// A KMS key (id, ARN or alias) that wraps tenant keys.
pub struct AwsKms {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl AwsKms {
    /// A client for `key_id`, configured from the environment; `endpoint` overrides the URL.
    pub async fn new(key_id: &str, endpoint: Option<&str>) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(url) = endpoint {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        Self {
            client: aws_sdk_kms::Client::new(&config),
            key_id: key_id.to_owned(),
        }
    }

    /// A client for `key_id` from an SDK configuration built by the caller.
    pub fn from_config(config: &aws_config::SdkConfig, key_id: &str) -> Self {
        Self {
            client: aws_sdk_kms::Client::new(config),
            key_id: key_id.to_owned(),
        }
    }

    /// The client, for administration (creating keys in tests).
    pub fn client(&self) -> &aws_sdk_kms::Client {
        &self.client
    }

    fn context(aad: &[u8]) -> (String, String) {
        (
            "livora".to_owned(),
            base64::engine::general_purpose::STANDARD.encode(aad),
        )
    }
}

fn failed(e: impl std::fmt::Display) -> CryptoError {
    CryptoError::Kms(e.to_string())
}

#[async_trait::async_trait]
impl Kms for AwsKms {
    fn key_id(&self) -> String {
        format!("aws:{}", self.key_id)
    }

    async fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (k, v) = Self::context(aad);
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(plaintext))
            .encryption_context(k, v)
            .send()
            .await
            .map_err(|e| failed(aws_sdk_kms::error::DisplayErrorContext(e)))?;
        let blob = out
            .ciphertext_blob
            .ok_or_else(|| failed("KMS returned no ciphertext"))?;
        let mut wrapped = TAG.to_vec();
        wrapped.extend_from_slice(blob.as_ref());
        Ok(wrapped)
    }

    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let blob = wrapped.strip_prefix(TAG).ok_or(CryptoError::Malformed)?;
        let (k, v) = Self::context(aad);
        let out = self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(blob))
            .encryption_context(k, v)
            .send()
            .await
            .map_err(|e| failed(aws_sdk_kms::error::DisplayErrorContext(e)))?;
        out.plaintext
            .map(|p| p.into_inner())
            .ok_or_else(|| failed("KMS returned no plaintext"))
    }
}

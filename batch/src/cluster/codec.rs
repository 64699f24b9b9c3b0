//! How Weft's physical operators travel between the Ballista client, the
//! scheduler and the executors: [`WeftCodec`] wraps Ballista's own codec
//! (every task plan holds Ballista's shuffle nodes) and puts every node it
//! encodes, Weft's or Ballista's, in an envelope
//!
//! ```text
//! b"WEFT" | u16le wire version | u8 kind (0: Ballista's node, 1: Weft's fold, 2: Weft's training set) | payload
//! ```
//!
//! so a process of another Weft version refuses a plan by name instead of
//! misreading it.
//!
//! Weft's operators are [`FoldExec`] (the batch job) and [`TrainingExec`]
//! (training sets); each is rebuilt with the `[s3]` settings of the process
//! that decodes it (credentials never travel in plans).

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use weft_config::S3Section;

use crate::operator::FoldExec;
use crate::training::TrainingExec;

const MAGIC: &[u8; 4] = b"WEFT";
/// Bumped whenever a Weft node's payload or this envelope changes.
pub const WIRE_VERSION: u16 = 2;
const BALLISTA: u8 = 0;
const WEFT: u8 = 1;
const TRAINING: u8 = 2;
const HEADER: usize = 4 + 2 + 1;

/// The codec of every Weft process of a cluster: the client, the
/// scheduler and the executors.
#[derive(Debug)]
pub struct WeftCodec {
    inner: BallistaPhysicalExtensionCodec,
    s3: S3Section,
}

impl WeftCodec {
    /// A codec whose decoded operators reach `s3://` stores as `s3` says.
    pub fn new(s3: S3Section) -> WeftCodec {
        WeftCodec {
            inner: BallistaPhysicalExtensionCodec::default(),
            s3,
        }
    }
}

/// A Weft operator's task as its payload (`what` names it in errors).
pub(crate) fn to_payload<T: serde::Serialize>(task: &T, what: &str) -> Result<Vec<u8>> {
    postcard::to_allocvec(task)
        .map_err(|e| DataFusionError::Plan(format!("encoding Weft's {what}: {e}")))
}

/// A Weft operator's task from its payload, with its feature spec parsed
/// from the task's text.
pub(crate) fn from_payload<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    what: &str,
    spec_text: impl FnOnce(&T) -> &str,
) -> Result<(T, weft_core::FeatureSpec)> {
    let task: T = postcard::from_bytes(payload)
        .map_err(|e| DataFusionError::Plan(format!("decoding Weft's {what}: {e}")))?;
    let spec = weft_core::FeatureSpec::parse(spec_text(&task))
        .map_err(|e| DataFusionError::Plan(format!("the job's feature spec: {e}")))?;
    Ok((task, spec))
}

fn header(buf: &mut Vec<u8>, kind: u8) {
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&WIRE_VERSION.to_le_bytes());
    buf.push(kind);
}

/// The kind and payload of an envelope, or why it is refused.
fn open(buf: &[u8]) -> Result<(u8, &[u8])> {
    if buf.len() < HEADER || &buf[..4] != MAGIC {
        return Err(DataFusionError::Plan(
            "a plan node without Weft's envelope: the sending process is not this Weft build's (or not Weft)".into(),
        ));
    }
    let version = u16::from_le_bytes([buf[4], buf[5]]);
    if version != WIRE_VERSION {
        return Err(DataFusionError::Plan(format!(
            "a plan node of Weft wire version {version}, this process reads version {WIRE_VERSION}: run the same Weft version on the client, the scheduler and every executor"
        )));
    }
    Ok((buf[6], &buf[HEADER..]))
}

impl PhysicalExtensionCodec for WeftCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match open(buf)? {
            (BALLISTA, payload) => self.inner.try_decode(payload, inputs, ctx, proto_converter),
            (WEFT, payload) => FoldExec::decode(payload, inputs, &self.s3),
            (TRAINING, payload) => TrainingExec::decode(payload, inputs, &self.s3),
            (kind, _) => Err(DataFusionError::Plan(format!(
                "a plan node of unknown kind {kind} in Weft's envelope"
            ))),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(fold) = node.downcast_ref::<FoldExec>() {
            header(buf, WEFT);
            buf.extend_from_slice(&fold.encode()?);
            return Ok(());
        }
        if let Some(training) = node.downcast_ref::<TrainingExec>() {
            header(buf, TRAINING);
            buf.extend_from_slice(&training.encode()?);
            return Ok(());
        }
        header(buf, BALLISTA);
        self.inner.try_encode(node, buf, proto_converter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_of_another_version_or_none_are_refused_by_name() {
        let mut buf = Vec::new();
        header(&mut buf, WEFT);
        buf.push(42);
        assert_eq!(open(&buf).unwrap(), (WEFT, &[42u8][..]));
        buf[4] = 9;
        let e = open(&buf).unwrap_err().to_string();
        assert!(
            e.contains("wire version 9") && e.contains("reads version 2"),
            "{e}"
        );
        let e = open(b"\x08\x01").unwrap_err().to_string();
        assert!(e.contains("without Weft's envelope"), "{e}");
    }
}

//! GetProfile over gRPC without building the reply message: the served
//! values are encoded straight into the response body.
//!
//! The generated message (`v1::GetProfileResponse`) holds the features in a
//! `BTreeMap<String, v1::FeatureValue>`: a request built that map (a copy of
//! every name, a node per few entries), had prost walk it twice (length,
//! then bytes) and dropped it. [`ProfileReply`] keeps the values as the
//! evaluation left them, indexed by feature, and [`ReplyEncoder`] writes the
//! same protobuf bytes prost writes for the message (the map's entries in
//! name order, fields prost skips skipped; a test compares both byte for
//! byte). [`ProfileServer`] serves `weft.v1.ProfileService`: GetProfile
//! through this path, the other methods through the generated server. A
//! GetProfile for another shard's user is forwarded to its owner and the
//! owner's message sent on ([`GetProfileReply::Forwarded`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::Message;
use prost::bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tower::Service;
use weft_core::agg::FeatureValue;
use weft_proto::codec::WeftCodec;
use weft_proto::v1;
use weft_proto::v1::profile_service_server::ProfileServiceServer;

use crate::api::{Api, Method, Routed};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::grpc::{Grpc, call};
use crate::state::{Pair, Served, Serving};

/// A GetProfile reply, encoded by [`ReplyEncoder`] as the
/// `v1::GetProfileResponse` that [`crate::api::profile_response`] builds.
#[derive(Debug)]
pub struct ProfileReply {
    serving: Arc<Serving>,
    user_id: String,
    served: Served,
    freshness: v1::Freshness,
}

impl ProfileReply {
    pub fn new(
        serving: &Arc<Serving>,
        pair: &Pair,
        user_id: &str,
        served: Served,
        as_of: i64,
    ) -> ProfileReply {
        ProfileReply {
            freshness: serving.freshness(pair, as_of),
            serving: serving.clone(),
            user_id: user_id.to_string(),
            served,
        }
    }

    /// The (name, value) pairs of the features map, in wire order.
    fn features(&self) -> impl Iterator<Item = (&str, &FeatureValue)> {
        let spec = self.serving.spec();
        self.serving
            .by_name()
            .iter()
            .filter_map(|&i| Some((spec.features[i].name.as_str(), self.served.value(i)?)))
    }

    fn segments(&self) -> impl Iterator<Item = &str> {
        let spec = self.serving.spec();
        self.served
            .segments
            .iter()
            .map(|&i| spec.segments[i].name.as_str())
    }

    /// The `v1::Profile` message's body length.
    fn profile_len(&self) -> usize {
        let found = self.served.found;
        let mut n = if self.user_id.is_empty() {
            0
        } else {
            string_len(1, &self.user_id)
        };
        if found {
            n += key_len(2) + 1;
        }
        n += self
            .features()
            .map(|(name, v)| message_len(3, entry_len(name, v)))
            .sum::<usize>();
        n + self.segments().map(|s| string_len(4, s)).sum::<usize>()
    }

    /// The body lengths of the reply's two fields (profile, freshness).
    fn lens(&self) -> (usize, usize) {
        (self.profile_len(), self.freshness.encoded_len())
    }

    /// The whole reply's length: what [`ProfileReply::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let (profile, freshness) = self.lens();
        message_len(1, profile) + message_len(2, freshness)
    }

    /// Writes the reply's protobuf bytes.
    pub fn encode(&self, buf: &mut impl BufMut) {
        self.encode_with(self.lens(), buf);
    }

    fn encode_with(&self, (profile, freshness): (usize, usize), buf: &mut impl BufMut) {
        message_header(1, profile, buf);
        if !self.user_id.is_empty() {
            put_string(1, &self.user_id, buf);
        }
        if self.served.found {
            encode_key(2, WireType::Varint, buf);
            buf.put_u8(1);
        }
        for (name, v) in self.features() {
            message_header(3, entry_len(name, v), buf);
            put_string(1, name, buf);
            message_header(2, value_len(v), buf);
            put_value(v, buf);
        }
        for s in self.segments() {
            put_string(4, s, buf);
        }
        message_header(2, freshness, buf);
        self.freshness.encode_raw(buf);
    }
}

impl Api {
    /// [`Api::get_profile`] for the gRPC front end: the reply is encoded
    /// from the served values ([`ProfileReply`]) instead of a message.
    pub fn get_profile_reply(
        &self,
        principal: &Principal,
        req: &v1::GetProfileRequest,
    ) -> Result<ProfileReply, ApiError> {
        let (pair, as_of, served) = self.serve_profile(principal, req)?;
        Ok(ProfileReply::new(
            &self.serving,
            &pair,
            &req.user_id,
            served,
            as_of,
        ))
    }
}

fn string_len(tag: u32, s: &str) -> usize {
    message_len(tag, s.len())
}

fn message_len(tag: u32, body: usize) -> usize {
    key_len(tag) + encoded_len_varint(body as u64) + body
}

fn message_header(tag: u32, body: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(body as u64, buf);
}

fn put_string(tag: u32, s: &str, buf: &mut impl BufMut) {
    message_header(tag, s.len(), buf);
    buf.put_slice(s.as_bytes());
}

/// A features map entry's body: key (1) and value (2).
fn entry_len(name: &str, v: &FeatureValue) -> usize {
    string_len(1, name) + message_len(2, value_len(v))
}

/// A `v1::RankedEntry`'s body (proto3: an empty value and a zero count are
/// not written).
fn ranked_len(value: &str, count: i64) -> usize {
    let mut n = 0;
    if !value.is_empty() {
        n += string_len(1, value);
    }
    if count != 0 {
        n += key_len(2) + encoded_len_varint(count as u64);
    }
    n
}

/// A `v1::FeatureValue`'s body: the one field of its oneof, always written.
fn value_len(v: &FeatureValue) -> usize {
    match v {
        FeatureValue::Int(i) => key_len(1) + encoded_len_varint(*i as u64),
        FeatureValue::Float(_) => key_len(2) + 8,
        FeatureValue::Str(s) => string_len(3, s),
        FeatureValue::List(l) => message_len(4, l.iter().map(|s| string_len(1, s)).sum()),
        FeatureValue::Ranked(r) => message_len(
            5,
            r.iter()
                .map(|(v, c)| message_len(1, ranked_len(v, *c)))
                .sum(),
        ),
    }
}

fn put_value(v: &FeatureValue, buf: &mut impl BufMut) {
    match v {
        FeatureValue::Int(i) => {
            encode_key(1, WireType::Varint, buf);
            encode_varint(*i as u64, buf);
        }
        FeatureValue::Float(f) => {
            encode_key(2, WireType::SixtyFourBit, buf);
            buf.put_f64_le(*f);
        }
        FeatureValue::Str(s) => put_string(3, s, buf),
        FeatureValue::List(l) => {
            message_header(4, l.iter().map(|s| string_len(1, s)).sum(), buf);
            for s in l {
                put_string(1, s, buf);
            }
        }
        FeatureValue::Ranked(r) => {
            let body = r
                .iter()
                .map(|(v, c)| message_len(1, ranked_len(v, *c)))
                .sum();
            message_header(5, body, buf);
            for (value, count) in r {
                message_header(1, ranked_len(value, *count), buf);
                if !value.is_empty() {
                    put_string(1, value, buf);
                }
                if *count != 0 {
                    encode_key(2, WireType::Varint, buf);
                    encode_varint(*count as u64, buf);
                }
            }
        }
    }
}

/// GetProfile's answer: read here, or the owner's (a forwarded call).
#[derive(Debug)]
pub enum GetProfileReply {
    Here(ProfileReply),
    Forwarded(v1::GetProfileResponse),
}

/// Encodes [`GetProfileReply`]s.
#[derive(Debug, Default)]
pub struct ReplyEncoder;

impl Encoder for ReplyEncoder {
    type Item = GetProfileReply;
    type Error = Status;

    fn encode(&mut self, item: GetProfileReply, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            GetProfileReply::Here(reply) => {
                let lens = reply.lens();
                dst.reserve(message_len(1, lens.0) + message_len(2, lens.1));
                reply.encode_with(lens, dst);
            }
            GetProfileReply::Forwarded(message) => {
                dst.reserve(message.encoded_len());
                message.encode_raw(dst);
            }
        }
        Ok(())
    }
}

/// GetProfile's codec: requests decoded as by every generated method
/// ([`WeftCodec`]), replies by [`ReplyEncoder`].
#[derive(Debug, Default)]
pub struct ReplyCodec;

type RequestCodec = WeftCodec<v1::GetProfileResponse, v1::GetProfileRequest>;

impl Codec for ReplyCodec {
    type Encode = GetProfileReply;
    type Decode = v1::GetProfileRequest;
    type Encoder = ReplyEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> ReplyEncoder {
        ReplyEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder(RequestCodec::default().decoder())
    }
}

/// The generated methods' request decoder.
#[derive(Debug)]
pub struct RequestDecoder(<RequestCodec as Codec>::Decoder);

impl Decoder for RequestDecoder {
    type Item = v1::GetProfileRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        self.0.decode(buf)
    }
}

/// The GetProfile method.
#[derive(Debug, Clone)]
struct GetProfile(Arc<Api>);

type Answer = Result<Response<GetProfileReply>, Status>;

impl tonic::server::UnaryService<v1::GetProfileRequest> for GetProfile {
    type Response = GetProfileReply;
    /// Ready at once when read here (no allocation); the owner's answer
    /// when forwarded.
    type Future = futures::future::Either<
        std::future::Ready<Answer>,
        BoxFuture<Response<GetProfileReply>, Status>,
    >;

    fn call(&mut self, req: Request<v1::GetProfileRequest>) -> Self::Future {
        use futures::future::Either;
        let c = call(Method::GetProfile, &req);
        let api = &self.0;
        let user = &req.get_ref().user_id;
        let routed = api.run_routed("grpc", &c, user, |p, _| {
            api.get_profile_reply(p, req.get_ref())
        });
        let arrival = c.arrival;
        match routed {
            Ok(Routed::Here(r)) => Either::Left(std::future::ready(Ok(Response::new(
                GetProfileReply::Here(r),
            )))),
            Err(e) => Either::Left(std::future::ready(Err(e.into()))),
            Ok(Routed::There(forward)) => {
                let api = api.clone();
                let req = req.into_inner();
                Either::Right(Box::pin(async move {
                    api.finish(
                        "grpc",
                        Method::GetProfile,
                        arrival,
                        forward.get_profile(req),
                    )
                    .await
                    .map(|r| Response::new(GetProfileReply::Forwarded(r)))
                    .map_err(Status::from)
                }))
            }
        }
    }
}

/// `weft.v1.ProfileService`: GetProfile through [`ProfileReply`], the
/// other methods through the generated server.
#[derive(Debug, Clone)]
pub struct ProfileServer {
    api: Arc<Api>,
    generated: ProfileServiceServer<Grpc>,
}

impl ProfileServer {
    pub fn new(api: Arc<Api>) -> ProfileServer {
        ProfileServer {
            generated: ProfileServiceServer::new(Grpc(api.clone())),
            api,
        }
    }
}

impl NamedService for ProfileServer {
    const NAME: &'static str = <ProfileServiceServer<Grpc> as NamedService>::NAME;
}

const GET_PROFILE: &str = "/weft.v1.ProfileService/GetProfile";

impl<B> Service<http::Request<B>> for ProfileServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != GET_PROFILE {
            return self.generated.call(req);
        }
        let method = GetProfile(self.api.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ReplyCodec);
            Ok(grpc.unary(method, req).await)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::api::profile_response;

    fn serving(dir: &std::path::Path) -> Arc<Serving> {
        let spec =
            weft_core::FeatureSpec::parse(include_str!("../../deploy/features.example.toml"))
                .unwrap();
        let store = weft_speed::store::SpeedStore::open(dir, Arc::new(spec), false).unwrap();
        Arc::new(Serving::new(
            Arc::new(store),
            Arc::new(weft_speed::consumer::SpeedMetrics::default()),
        ))
    }

    /// xorshift64*: values without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn string(&mut self) -> String {
            let len = [0, 1, 5, 200][self.below(4) as usize];
            (0..len)
                .map(|i| ['a', 'é', '0', '\u{1f600}'][(i + self.below(4) as usize) % 4])
                .collect()
        }

        fn int(&mut self) -> i64 {
            match self.below(4) {
                0 => 0,
                1 => -(self.below(1 << 40) as i64),
                2 => i64::MIN + self.below(3) as i64,
                _ => self.next() as i64 >> self.below(64),
            }
        }

        fn value(&mut self) -> Option<FeatureValue> {
            Some(match self.below(6) {
                0 => return None,
                1 => FeatureValue::Int(self.int()),
                2 => FeatureValue::Float(
                    [0.0, -0.0, 1.5, -3.25e300, f64::INFINITY][self.below(5) as usize],
                ),
                3 => FeatureValue::Str(self.string()),
                4 => FeatureValue::List((0..self.below(4)).map(|_| self.string()).collect()),
                _ => FeatureValue::Ranked(
                    (0..self.below(4))
                        .map(|_| (self.string(), self.int()))
                        .collect(),
                ),
            })
        }
    }

    /// The reply's bytes are exactly prost's for the message the HTTP
    /// front end builds from the same served profile: every value kind,
    /// empty strings and lists, zero and negative counts, no values at all.
    #[test]
    fn replies_encode_as_the_generated_message() {
        let dir = tempfile::tempdir().unwrap();
        let serving = serving(dir.path());
        let spec = serving.spec().clone();
        let offsets = [(0, 17), (3, 1 << 40)];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..2000 {
            let pair = Pair::new(None, round % 3);
            let served = Served {
                found: rng.below(2) == 0,
                values: (0..spec.features.len()).map(|_| rng.value()).collect(),
                segments: (0..spec.segments.len())
                    .filter(|_| rng.below(2) == 0)
                    .collect(),
            };
            let user = if round % 7 == 0 {
                String::new()
            } else {
                rng.string()
            };
            let as_of = rng.int();
            let reply = ProfileReply::new(&serving, &pair, &user, served.clone(), as_of);
            let mut message = profile_response(&serving, &pair, &user, served, as_of);
            if round % 5 == 0 {
                // Freshness with boundary offsets, as a served batch view has.
                let f = message.freshness.as_mut().unwrap();
                f.batch_offsets = offsets
                    .iter()
                    .map(|&(partition, offset)| v1::PartitionOffset { partition, offset })
                    .collect();
                let mut reply = reply;
                reply.freshness = f.clone();
                check(&reply, &message);
            } else {
                check(&reply, &message);
            }
        }
    }

    fn check(reply: &ProfileReply, message: &v1::GetProfileResponse) {
        let mut bytes = Vec::new();
        reply.encode(&mut bytes);
        assert_eq!(bytes.len(), reply.encoded_len());
        assert_eq!(bytes, message.encode_to_vec(), "{message:?}");
        assert_eq!(
            &v1::GetProfileResponse::decode(bytes.as_slice()).unwrap(),
            message
        );
    }
}

//! The gRPC codec of the generated services: prost, except that a request
//! body that is not a valid message is `INVALID_ARGUMENT` (the client sent
//! it) rather than tonic's default `INTERNAL` (which would say the server
//! failed).

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// [`ProstCodec`] with client-error decoding failures.
#[derive(Debug, Clone)]
pub struct WeftCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for WeftCodec<T, U> {
    fn default() -> Self {
        WeftCodec(PhantomData)
    }
}

impl<T, U> Codec for WeftCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = WeftDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        WeftDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::default()))
    }
}

/// Decodes with prost; a malformed message is the caller's error.
#[derive(Debug)]
pub struct WeftDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for WeftDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| {
            if s.code() == tonic::Code::Internal {
                Status::invalid_argument(format!(
                    "the request is not a valid message: {}",
                    s.message()
                ))
            } else {
                s
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

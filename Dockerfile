# Builds the ndbridge binaries and examples; libzmq is compiled from source by the zmq crate.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins --examples

FROM debian:bookworm-slim
COPY --from=build /src/target/release/ndbridge /usr/local/bin/ndbridge
COPY --from=build /src/target/release/examples/worker /usr/local/bin/ndbridge-example-worker
ENTRYPOINT ["ndbridge"]

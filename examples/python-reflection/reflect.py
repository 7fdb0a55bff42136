"""A client that knows nothing about wxpay but the server's reflection.

Lists the services of a gRPC server with the Python gRPC project's own
reflection client (grpcio-reflection, which asks grpc.reflection.v1alpha),
and with --create-order builds a CreateOrder request from the reflected
descriptors alone (no generated code, no .proto file) and calls it.

    pip install -r requirements.txt
    python reflect.py 127.0.0.1:50051 --create-order KEY

Prints one JSON object: {"services": [...], "create_order": {...}}.
API_TOKEN, when set, is sent as the bearer token.
"""

import argparse
import json
import os
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def create_order(channel, pool, key):
    service = pool.FindServiceByName("wxpay.v1.PaymentService")
    method = service.FindMethodByName("CreateOrder")
    request_class = message_factory.GetMessageClass(method.input_type)
    reply_class = message_factory.GetMessageClass(method.output_type)
    request = json_format.ParseDict(
        {
            "idempotency_key": key,
            "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            "description": "reflection",
            "total_fee": 1,
            "client_ip": "127.0.0.1",
            "expire_seconds": 1800,
        },
        request_class(),
        # The field names as the descriptor has them, not camelCase.
        ignore_unknown_fields=False,
    )
    call = channel.unary_unary(
        f"/{service.full_name}/{method.name}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=reply_class.FromString,
    )
    metadata = []
    if os.environ.get("API_TOKEN"):
        metadata.append(("authorization", f"Bearer {os.environ['API_TOKEN']}"))
    reply = call(request, timeout=10, metadata=metadata)
    return json_format.MessageToDict(
        reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("target", help="host:port of the gRPC server")
    parser.add_argument("--create-order", metavar="IDEMPOTENCY_KEY")
    args = parser.parse_args()

    with grpc.insecure_channel(args.target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        database = ProtoReflectionDescriptorDatabase(channel)
        out = {"services": sorted(database.get_services())}
        if args.create_order:
            pool = descriptor_pool.DescriptorPool(database)
            out["create_order"] = create_order(channel, pool, args.create_order)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as e:
        print(f"{e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)

# The MLflow tracking server: the same mlflow as the trainer (pyproject.toml), with the PostgreSQL driver,
# boto3 for an S3 artifact store, and the basic-auth app (`mlflow server --app-name basic-auth`).
#   docker build -f docker/mlflow.Dockerfile -t seq-jepa-mlflow:3.17.2 docker
# Store, bucket and admin credentials come from the environment at run time (see infra/README.md).
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG MLFLOW_VERSION=3.17.2
ENV PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
RUN pip install --no-cache-dir "mlflow[auth]==${MLFLOW_VERSION}" "psycopg2-binary==2.9.13" "boto3==1.44.5" \
    && groupadd --gid 1000 mlflow && useradd --create-home --uid 1000 --gid 1000 mlflow

USER 1000:1000
WORKDIR /home/mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]

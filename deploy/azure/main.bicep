// drug_nbdev on Azure Container Apps: the REST API and the Voila form, from images in your registry.
// Walkthrough: docs/deploy-azure.md. Not deployed or compiled from CI (no Azure, and `az bicep build` needs the
// network); tests/test_deploy_files.py checks its structure offline.
targetScope = 'resourceGroup'

@description('Region of every resource')
param location string = resourceGroup().location

@description('Prefix of resource names (letters, digits, hyphens)')
@minLength(3)
@maxLength(20)
param name string = 'drug-nbdev'

@description('API image, e.g. myregistry.azurecr.io/drug-nbdev-api:1.0')
param apiImage string

@description('Form image, e.g. myregistry.azurecr.io/drug-nbdev-form:1.0')
param formImage string

@description('Registry login server, e.g. myregistry.azurecr.io (pulled with the apps\' managed identity)')
param registryServer string

@description('Resource id of a user-assigned identity with AcrPull on the registry, Storage Blob Data Contributor on the storage account')
param identityId string

@description('Client id of that identity (DefaultAzureCredential picks it by AZURE_CLIENT_ID)')
param identityClientId string

@secure()
@description('Bearer token for the API (state-changing endpoints, /metrics); at least 12 characters')
param apiToken string

@secure()
@description('SQLAlchemy URL of the database, e.g. postgresql://user:pw@server.postgres.database.azure.com/drug?sslmode=require or mssql+pymssql://…')
param dbUrl string

@description('Blob Storage account URL, e.g. https://account.blob.core.windows.net (read with the managed identity)')
param storeUrl string

@description('MLflow tracking URI: an MLflow server or an Azure ML workspace (azureml://…); empty = inside the container')
param mlflowUri string = ''

resource logs 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: '${name}-logs'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource env 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: '${name}-env'
  location: location
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

var commonEnv = [
  { name: 'DRUG_NBDEV_DB_URL', secretRef: 'db-url' }
  { name: 'DRUG_NBDEV_STORE', value: storeUrl }
  { name: 'MLFLOW_TRACKING_URI', value: mlflowUri }
  { name: 'AZURE_CLIENT_ID', value: identityClientId }
  { name: 'DRUG_NBDEV_API_TOKEN', secretRef: 'api-token' }
  // the API and the form answer only their own Host names (DNS-rebinding guard); /health answers any, for the probes
  { name: 'DRUG_NBDEV_ALLOWED_HOSTS', value: '${name}-api.${env.properties.defaultDomain},${name}-form.${env.properties.defaultDomain},localhost,127.0.0.1' }
]

resource api 'Microsoft.App/containerApps@2024-03-01' = {
  name: '${name}-api'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    managedEnvironmentId: env.id
    configuration: {
      secrets: [
        { name: 'api-token', value: apiToken }
        { name: 'db-url', value: dbUrl }
      ]
      registries: [
        { server: registryServer, identity: identityId }
      ]
      ingress: {
        external: true
        targetPort: 8000
        transport: 'http'
        allowInsecure: false
      }
    }
    template: {
      containers: [
        {
          name: 'api'
          image: apiImage
          resources: { cpu: json('1.0'), memory: '2Gi' }
          env: commonEnv
          probes: [
            // Container Apps ignores the image's HEALTHCHECK: these are what restart and route
            {
              type: 'Liveness'
              httpGet: { path: '/health', port: 8000 }
              initialDelaySeconds: 10
              periodSeconds: 30
              failureThreshold: 3
            }
            {
              type: 'Readiness'
              httpGet: { path: '/health', port: 8000 }
              periodSeconds: 10
              failureThreshold: 3
            }
            {
              type: 'Startup'
              httpGet: { path: '/health', port: 8000 }
              periodSeconds: 5
              failureThreshold: 24
            }
          ]
        }
      ]
      // one replica: retrain jobs and the model follow live in the process (see README, "The REST API")
      scale: { minReplicas: 1, maxReplicas: 1 }
    }
  }
}

resource form 'Microsoft.App/containerApps@2024-03-01' = {
  name: '${name}-form'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    managedEnvironmentId: env.id
    configuration: {
      secrets: [
        { name: 'api-token', value: apiToken }
        { name: 'db-url', value: dbUrl }
      ]
      registries: [
        { server: registryServer, identity: identityId }
      ]
      ingress: {
        external: true
        targetPort: 8866
        transport: 'http'
        allowInsecure: false
        // Voila runs one kernel per page in the replica that served it: its websocket must come back there
        stickySessions: { affinity: 'sticky' }
      }
    }
    template: {
      containers: [
        {
          name: 'form'
          image: formImage
          resources: { cpu: json('1.0'), memory: '2Gi' }
          env: commonEnv
          probes: [
            {
              type: 'Liveness'
              httpGet: { path: '/voila/static/voila.js', port: 8866 }
              initialDelaySeconds: 15
              periodSeconds: 30
              failureThreshold: 3
            }
            {
              type: 'Readiness'
              httpGet: { path: '/voila/static/voila.js', port: 8866 }
              periodSeconds: 10
              failureThreshold: 3
            }
          ]
        }
      ]
      scale: { minReplicas: 1, maxReplicas: 3 }
    }
  }
}

output apiUrl string = 'https://${api.properties.configuration.ingress.fqdn}'
output formUrl string = 'https://${form.properties.configuration.ingress.fqdn}'
